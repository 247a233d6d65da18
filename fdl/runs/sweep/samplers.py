"""Optuna samplers and pruners by name (`sweep.sampler`, `sweep.pruner`), checked at load time.

    sampler: tpe                       # or {name: tpe, n_startup_trials: 5}, any Optuna sampler
    pruner: {name: median, n_warmup_steps: 3}

A name is a short name below or the Optuna class name; the other keys are the
class's keyword arguments, checked against its signature.
"""
from __future__ import annotations

import contextlib
import inspect
import warnings

import optuna

from fdl.config.load import ConfigError
from fdl.errors import unknown_name_message

__all__ = ["SAMPLERS", "PRUNERS", "make_sampler", "make_pruner", "check_sampler", "check_pruner",
           "quiet_optuna"]

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler",
            "qmc": "QMCSampler", "gp": "GPSampler", "nsgaii": "NSGAIISampler",
            "nsgaiii": "NSGAIIISampler", "bruteforce": "BruteForceSampler"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner",
           "successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner",
           "threshold": "ThresholdPruner", "wilcoxon": "WilcoxonPruner", "none": "NopPruner"}


def _optuna_class(where: str, spec: dict, names: dict, module):
    """The Optuna class `spec["name"]` names (a short name or the class name) and its kwargs."""
    name = spec["name"]
    class_name = names.get(name, name if name in names.values() else None)
    if class_name is None:
        raise ConfigError(f"{where}: {unknown_name_message(where.split('.')[-1], name, names)}")
    cls = getattr(module, class_name)
    arguments = {k: v for k, v in spec.items() if k != "name"}
    valid = list(inspect.signature(cls).parameters)
    for key in arguments:
        if key not in valid:
            raise ConfigError(f"{where}: {unknown_name_message(f'{name} argument', key, valid)}")
    return cls, arguments


@contextlib.contextmanager
def quiet_optuna():
    """Silences Optuna's 'experimental' notices and its advice to use Study.optimize with
    heartbeats: ask-and-tell is the point here, and heartbeats are recorded by `heartbeat`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        yield


def _build(where: str, cls, arguments: dict):
    with quiet_optuna():
        try:
            return cls(**arguments)
        except (TypeError, ValueError, ImportError) as error:
            raise ConfigError(f"{where}: {cls.__name__}: {error}") from None


def make_sampler(spec) -> optuna.samplers.BaseSampler:
    """The sampler a SweepSpec's `sampler` names, seeded with its `sampler_seed` when it takes a seed."""
    cls, arguments = _optuna_class("sweep.sampler", spec.sampler, SAMPLERS, optuna.samplers)
    if "seed" in inspect.signature(cls).parameters:
        arguments.setdefault("seed", spec.sampler_seed)
    return _build("sweep.sampler", cls, arguments)


def make_pruner(spec) -> optuna.pruners.BasePruner:
    """The pruner a SweepSpec's `pruner` names (optuna sweeps only; grid and random never prune)."""
    if spec.method != "optuna":
        return optuna.pruners.NopPruner()
    return _build("sweep.pruner", *_optuna_class("sweep.pruner", spec.pruner, PRUNERS, optuna.pruners))


def check_sampler(sampler: dict) -> None:
    _build("sweep.sampler", *_optuna_class("sweep.sampler", sampler, SAMPLERS, optuna.samplers))


def check_pruner(pruner: dict) -> None:
    _build("sweep.pruner", *_optuna_class("sweep.pruner", pruner, PRUNERS, optuna.pruners))
