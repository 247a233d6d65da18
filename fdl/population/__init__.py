"""fdl.population: populations of models as one compiled program, and sweeps over them.

Two layers, importable without the command line:
  members   the engine (imports fdl.train, never fdl.config): `train_population`
            trains P members (seeds x injected hyperparameters) per compiled call.
  spec, search, sweep, results
            the sweep (imports fdl.config: it reads configs): a `sweep:` section
            -> points -> groups of one program each -> an Optuna study shared by
            any number of workers -> results.csv, best.yaml, plots.

Nothing in fdl.config imports this package, so the direction stays
cli -> population -> config -> train.

Example:
  >>> result = fdl.population.run_sweep("configs/mnist1d_mlp_sweep.yaml")
  >>> result.best["point"], result.best["mean"]
"""
from fdl.population.members import MemberSpec, PopulationResult, evaluate_population, train_population
from fdl.population.spec import (VECTORIZABLE, Choice, Group, IntRange, SweepSpec, Uniform,
                                 grid_points, group_points, groups, initial_points, parse_sweep,
                                 random_points)

# The search needs Optuna (the `sweep` extra); it loads on first use, so the
# population engine and the spec work without it.
_SEARCH = {"make_pruner", "make_sampler", "make_storage", "open_study", "work"}
_SWEEP = {"SweepResult", "TrialTrainer", "run_sweep"}


def __getattr__(name):
    if name in _SEARCH | _SWEEP:
        import importlib
        module = importlib.import_module("fdl.population.search" if name in _SEARCH else "fdl.population.sweep")
        return getattr(module, name)
    raise AttributeError(f"module 'fdl.population' has no attribute {name!r}")


__all__ = [
    "MemberSpec", "PopulationResult", "train_population", "evaluate_population",
    "SweepSpec", "Choice", "Uniform", "IntRange", "Group", "VECTORIZABLE", "parse_sweep",
    "grid_points", "random_points", "initial_points", "group_points", "groups",
    *sorted(_SEARCH), *sorted(_SWEEP),
]
