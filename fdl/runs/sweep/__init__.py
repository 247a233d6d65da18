"""fdl.runs.sweep: a config's `sweep:` section -> points -> populations -> an Optuna study -> results.

  spec      the checked sweep section: distributions, points, groups of one program each
  samplers  Optuna samplers and pruners by name
  search    the study shared by any number of workers (heartbeats, retries)
  driver    `run_sweep`: trains each group with `fdl.population.Population`, fed by the
            same `fdl.config.build_arguments` as `fdl train`
  results   results.csv, members/, best.yaml, plots, read back from the study
  worker    the worker process `fdl sweep --workers N` starts

Needs Optuna (`pip install "fdl[sweep]"`); the spec alone does not.

Example:
  >>> from fdl.runs.sweep import run_sweep
  >>> result = run_sweep("configs/mnist1d_mlp_sweep.yaml",     # 4 learning rates x 2 seeds, 2 epochs
  ...                    overrides=["sweep.seeds=2", "training.epochs=2"], verbose=0)
  >>> result.best["point"], result.best["mean"]                # the best point, its mean val_accuracy
  ({'optimizer.learning_rate': ...}, ...)
"""
from fdl.runs.sweep.spec import (VECTORIZABLE, Choice, Group, IntRange, SweepSpec, Uniform, grid_points,
                                 group_points, groups, initial_points, parse_sweep, random_points)

_DRIVER = {"SweepResult", "TrialTrainer", "run_sweep"}


def __getattr__(name):
    # The driver needs Optuna (the `sweep` extra): it loads on first use.
    if name in _DRIVER:
        from fdl.runs.sweep import driver
        return getattr(driver, name)
    raise AttributeError(f"module 'fdl.runs.sweep' has no attribute {name!r}")


__all__ = ["SweepSpec", "Choice", "Uniform", "IntRange", "Group", "VECTORIZABLE", "parse_sweep",
           "grid_points", "random_points", "initial_points", "group_points", "groups", *sorted(_DRIVER)]
