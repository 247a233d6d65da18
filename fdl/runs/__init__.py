"""fdl.runs: the applications over the engine — train a config, resume it, read a run back, sweep.

    result = fdl.runs.train_from_config(fdl.config.load_config("configs/mnist1d_mlp.yaml"))
    run = fdl.load_run(result.run_dir)            # run.evaluate("test"), run.predict(x)
    sweep = fdl.runs.sweep.run_sweep("configs/mnist1d_mlp_sweep.yaml")   # needs the sweep extra
    fdl.runs.export.export(run, out="mlp.export")  # and fdl.runs.serve, .report, .explain: shipping a run

How one run flows: `fdl.config` loads and checks the YAML and builds the
model, optimizer, loss, data and callbacks once (`fdl.config.build_arguments`);
`train_from_config` hands them to `fdl.fit` (a sweep hands the same arguments
to `fdl.population`), and `fdl.records.RunDir` writes the run directory.
Imports config, train, population and records; only the command imports it.
"""
from fdl.runs.loaded import LoadedRun, load_run
from fdl.runs.saved import SavedModel, load, save
from fdl.runs.train import RunResult, resume_run, train_from_config

_ON_FIRST_USE = ("sweep", "export", "serve", "report", "explain")


def __getattr__(name):
    # The applications load on first use: the sweep needs Optuna (the `sweep` extra), serve
    # FastAPI (`serve`), and none of them is needed to train.
    if name in _ON_FIRST_USE:
        import importlib
        return importlib.import_module(f"fdl.runs.{name}")
    raise AttributeError(f"module 'fdl.runs' has no attribute {name!r}")


__all__ = ["LoadedRun", "load_run", "SavedModel", "save", "load", "RunResult", "resume_run",
           "train_from_config", *_ON_FIRST_USE]
