"""Shared fixtures; tests run on CPU with fixed seeds."""
import atexit
import contextlib
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One fresh compilation cache for the session (subprocesses inherit it): tests that build
# the same programs load them, and nothing from outside the session is read.
if "FDL_COMPILATION_CACHE" not in os.environ:
    os.environ["FDL_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="fdl-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["FDL_COMPILATION_CACHE"], ignore_errors=True)
# The suite is compile-bound (hundreds of small programs, each run a few times): XLA's CPU
# backend at optimisation level 0 compiles them about a third faster, and its elemental loop
# emitter instead of the MLIR fusion emitters another third (test_fit's CPU time 58 -> 40 s).
# Their numbers differ from the defaults' by float32 rounding only (another summation order; no
# fast-math either way). Subprocesses inherit them; a setting already in XLA_FLAGS wins.
for flag, value in (("xla_backend_optimization_level", "0"), ("xla_cpu_use_fusion_emitters", "false")):
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{flag}={value}".strip()

import pytest  # noqa: E402


class CompileCounter:
    """Counts the programs built (compiled, or loaded from the session's compilation cache) in `counting()`.

    A program the cache holds counts too: the tests count the programs the code needs,
    whichever test built them first.
    """

    def __init__(self):
        from fdl.compilation import CompileClock
        self.clock = CompileClock()

    @contextlib.contextmanager
    def counting(self):
        """Yields a list whose length, after the block, is the number of programs compiled in it."""
        start, compiled = self.count, []
        try:
            yield compiled
        finally:
            compiled.extend([1] * (self.count - start))

    @property
    def count(self) -> int:
        return self.clock.programs()

    def close(self):
        self.clock.close()


@pytest.fixture
def compiles():
    """`with compiles.counting() as compiled: ...` then `len(compiled)` programs were compiled."""
    counter = CompileCounter()
    yield counter
    counter.close()


SHIPPED_CONFIGS = {
    # Four small runs of the kinds a user ships (export, serve, explain, report read them):
    # an MLP with fitted standardization, the CNN, the GRU, and an MLP with BatchNorm.
    "mlp": "data: {name: mnist1d, limit_train: 200, val_fraction: 0.25, preprocess: standardize}\n"
           "model: {name: mnist1d_mlp, args: {hidden: [16]}}",
    "cnn": "data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}\n"
           "model: {name: mnist1d_cnn, args: {channels: 4}}",
    "gru": "data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}\n"
           "model: {name: mnist1d_gru, args: {hidden: 4}}",
    "batchnorm": "data: {name: mnist1d, limit_train: 200, val_fraction: 0.25, preprocess: standardize}\n"
                 "model: {layers: [Flatten, {Dense: {features: 16}}, BatchNorm, Relu, {Dense: {features: 10}}]}",
}
SHIPPED_TRAINING = ("optimizer: {name: adam, learning_rate: 1e-2}\n"
                    "training: {epochs: 2, batch_size: 50, verbose: 0}\n"
                    "metrics: [accuracy]\noutput: {tensorboard: false, plots: false}\n")


@pytest.fixture(scope="session")
def shipped_runs(tmp_path_factory) -> dict:
    """{"mlp" | "cnn" | "gru" | "batchnorm": pathlib.Path of a finished 2-epoch run directory}.

    Trained once per session; tests read them and must not write into them (copy first).
    """
    from fdl.config import load_config
    from fdl.runs import train_from_config

    folder = tmp_path_factory.mktemp("shipped")
    runs = {}
    for name, head in SHIPPED_CONFIGS.items():
        (folder / f"{name}.yaml").write_text(f"name: shipped_{name}\n{head}\n{SHIPPED_TRAINING}")
        config = load_config(folder / f"{name}.yaml", [f"output.dir={folder / name}"])
        runs[name] = train_from_config(config).run_dir.path
    return runs
