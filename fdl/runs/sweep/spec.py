"""The `sweep:` section of a run config: what to try, and how points split into populations.

    sweep:
      method: grid                 # grid | random | optuna
      seeds: 8                     # members per point: seeds seed, seed+1, ... (seed: the config's)
      params:
        optimizer.learning_rate: [1e-3, 3e-3, 1e-2]      # a list: grid values / a choice
        optimizer.weight_decay: {loguniform: [1e-5, 1e-2]}
        optimizer.b1: {uniform: [0.8, 0.99]}
        model.args.hidden: {choice: [[64], [100, 100]]}
        training.batch_size: {int: [32, 128, 32]}        # low, high (inclusive), optional step

`parse_sweep(config)` checks the section against the base config and returns a
typed `SweepSpec`; every problem is a one-line `ConfigError` naming the key.

A point (one dict `swept key -> value`) is trained with `spec.seeds` members.
Swept keys are *vectorizable* when only an array inside the train state changes:
the optimizer hyperparameters fdl.optim injects (`VECTORIZABLE`) and `seed`.
Any other key (width, depth, layer type, batch size, optimizer name, epochs)
changes the compiled program, so `group_points` puts points that differ in
those keys into separate `Group`s, each trained by one `train_population` call.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fdl.config.build import build_model, build_optimizer
from fdl.config.load import ConfigError, alias_arguments, check_keys
from fdl.config.schema import SweepConfig
from fdl.errors import did_you_mean
from fdl.population.members import MemberSpec
from fdl.train.callbacks import Monitor

__all__ = [
    "METHODS", "VECTORIZABLE", "encode_value", "Choice", "Uniform", "IntRange", "DISTRIBUTIONS",
    "parse_distribution", "SweepSpec", "parse_sweep", "check_key", "apply_point", "check_params",
    "grid_points", "random_points", "initial_points", "Group", "is_vectorizable", "point_seeds",
    "point_config", "group_points", "groups",
]


METHODS = ("grid", "random", "optuna")
# Swept keys that are arrays in the train state: values vmap inside one program.
VECTORIZABLE = ("optimizer.learning_rate", "optimizer.weight_decay", "optimizer.momentum",
                "optimizer.b1", "optimizer.b2", "optimizer.eps", "seed")


# ----------------------------------------------------------------------------- distributions

def encode_value(value: Any) -> Any:
    """A categorical value as Optuna stores it: scalars as they are, lists/dicts as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of `values` (a YAML list, or `{choice: [...]}`); grid search tries each."""

    values: tuple

    def grid(self) -> list:
        return list(self.values)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def suggest(self, trial, name: str) -> Any:
        encoded = [encode_value(v) for v in self.values]
        return self.values[encoded.index(trial.suggest_categorical(name, encoded))]

    def to_plain(self) -> Any:
        return {"choice": list(self.values)}


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A float in [low, high]; `log` draws it uniformly in log space (`loguniform`)."""

    low: float
    high: float
    log: bool = False

    def grid(self) -> list:
        kind = "loguniform" if self.log else "uniform"
        raise ConfigError(f"{kind}: grid search needs values — give a list, or use method: random "
                          "or optuna")

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:  # clipped: exp(log(high)) can round above high
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            return float(min(max(value, self.low), self.high))
        return float(rng.uniform(self.low, self.high))

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def to_plain(self) -> Any:
        return {"loguniform" if self.log else "uniform": [self.low, self.high]}


@dataclasses.dataclass(frozen=True)
class IntRange:
    """An int in low, low + step, ..., high (both ends included)."""

    low: int
    high: int
    step: int = 1

    def grid(self) -> list:
        return list(range(self.low, self.high + 1, self.step))

    def sample(self, rng: np.random.Generator) -> int:
        return self.low + self.step * int(rng.integers((self.high - self.low) // self.step + 1))

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step)

    def to_plain(self) -> Any:
        return {"int": [self.low, self.high, self.step]}


Distribution = Choice | Uniform | IntRange
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")


def _range_bounds(where: str, kind: str, bounds: Any, integer: bool) -> list:
    """[low, high(, step)] checked: numbers, two (three for int) of them, low < high."""
    sizes = (2, 3) if integer else (2,)
    number = int if integer else (int, float)
    if not isinstance(bounds, list) or len(bounds) not in sizes or \
            not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds):
        shape = "[low, high] or [low, high, step] of ints" if integer else "[low, high] of numbers"
        raise ConfigError(f"{where}: {kind} expects {shape}, got {bounds!r}")
    low, high = bounds[:2]
    if low > high:
        raise ConfigError(f"{where}: {kind} range has low {low} > high {high} — swap them")
    if low == high:
        raise ConfigError(f"{where}: {kind} range [{low}, {high}] is empty — widen it, or fix the key "
                          "in the base config instead of sweeping it")
    if integer and len(bounds) == 3 and bounds[2] < 1:
        raise ConfigError(f"{where}: int step must be >= 1, got {bounds[2]}")
    return bounds


def parse_distribution(where: str, raw: Any) -> Distribution:
    """A params entry -> Choice / Uniform / IntRange.

    Raises:
      ConfigError: empty list, unknown distribution name, bad or empty range,
        a log range through zero or negative values.
    """
    if isinstance(raw, dict) and len(raw) == 1:
        (kind, body), = raw.items()
        if kind == "choice":
            return parse_distribution(where, body) if isinstance(body, list) else _not_a_list(where, body)
        if kind in ("uniform", "loguniform"):
            low, high = _range_bounds(where, kind, body, integer=False)
            if kind == "loguniform" and low <= 0:
                raise ConfigError(f"{where}: loguniform range [{low}, {high}] reaches zero or below — "
                                  "log ranges need 0 < low < high, e.g. [1e-5, 1e-2]")
            return Uniform(float(low), float(high), log=kind == "loguniform")
        if kind == "int":
            return IntRange(*_range_bounds(where, kind, body, integer=True))
        hint = did_you_mean(kind, DISTRIBUTIONS, quote=False)
        hint = f"{hint} " if hint else ""
        raise ConfigError(f"{where}: unknown distribution {kind!r} — {hint}valid: "
                          f"{', '.join(DISTRIBUTIONS)}, or a list of values")
    if not isinstance(raw, list):
        return _not_a_list(where, raw)
    if not raw:
        raise ConfigError(f"{where}: empty list of values — give at least one value")
    encoded = [json.dumps(encode_value(v)) for v in raw]
    if len(set(encoded)) != len(encoded):
        raise ConfigError(f"{where}: values repeat in {raw!r} — list each value once")
    return Choice(tuple(raw))


def _not_a_list(where: str, raw: Any):
    raise ConfigError(f"{where}: expected a list of values or one of {{choice: [...]}}, "
                      f"{{uniform: [low, high]}}, {{loguniform: [low, high]}}, {{int: [low, high]}}, "
                      f"got {raw!r}")


# ----------------------------------------------------------------------------- the spec

@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A checked `sweep:` section (see fdl.config.schema.SweepConfig for each field's meaning).

    Members stop early, lower their learning rate and restore their best state
    as the config's `callbacks:` section says, as in `fdl train`.
    """

    method: str
    seeds: int
    num_samples: int
    sampler_seed: int
    sampler: dict                          # {"name": ..., **kwargs}
    pruner: dict
    monitor: str
    mode: str                              # "min" or "max" (auto resolved)
    population_size: int                   # points (trials) per population
    max_members: int | None
    strategy: str
    storage: str | None
    study: str | None
    heartbeat_interval: int
    grace_period: int
    params: dict                           # swept key -> Distribution, in file order

    @property
    def direction(self) -> str:
        return "minimize" if self.mode == "min" else "maximize"

    def to_plain(self) -> dict:
        """The resolved section, as sweep.yaml records it (parse_sweep reads it back)."""
        plain = dataclasses.asdict(self)
        plain["params"] = {key: dist.to_plain() for key, dist in self.params.items()}
        return plain

    def fingerprint(self, config: DictConfig) -> str:
        """A hash of what the sweep trains: the base config (less its name, output and
        verbosity) and the method, params, seeds and monitor — so two different sweeps never
        share a study."""
        base = OmegaConf.to_container(config, resolve=True)
        for key in ("name", "output", "sweep"):
            base.pop(key)
        base["training"].pop("verbose")
        what = {k: v for k, v in self.to_plain().items()
                if k in ("method", "seeds", "num_samples", "sampler_seed", "params", "monitor")}
        return hashlib.sha256(json.dumps([base, what], sort_keys=True).encode()).hexdigest()[:16]


def _named(where: str, raw: Any) -> dict:
    """`tpe` -> {"name": "tpe"}; `{name: threshold, upper: 1.0}` as it is."""
    if isinstance(raw, str):
        return {"name": raw}
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return dict(raw)
    raise ConfigError(f"{where}: expected a name or {{name: ..., <arguments>}}, got {raw!r}")


def _resolve_mode(monitor: str, mode: str) -> str:
    try:
        return Monitor("sweep", monitor, mode).mode
    except ValueError:
        raise ConfigError(f"sweep.mode: expected auto, min or max, got {mode!r}") from None


def _check_monitor(monitor: str, config: DictConfig) -> None:
    logged = ["loss", "val_loss"] + [f"{p}{m}" for m in config.metrics for p in ("", "val_")]
    if monitor not in logged:
        hint = did_you_mean(monitor, logged, quote=False)
        hint = f"{hint} " if hint else ""
        raise ConfigError(f"sweep.monitor: {monitor!r} is not logged — {hint}logged: {', '.join(logged)}")


def _positive(where: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: expected an int >= 1, got {value!r}")


def parse_sweep(config: DictConfig) -> SweepSpec:
    """The checked, typed `sweep:` section of `config` (defaults filled in).

    Raises:
      ConfigError: no sweep section, an unknown sweep key, a bad method,
        sampler, pruner or monitor, and every params problem (see `check_params`).
    """
    from fdl.runs.sweep.samplers import check_pruner, check_sampler  # Optuna: the sweep extra

    if config.get("sweep") is None:
        raise ConfigError("config has no sweep: section — add one (see configs/mnist1d_mlp_sweep.yaml)")
    raw = OmegaConf.to_container(config.sweep, resolve=True)
    check_keys(raw, SweepConfig, prefix="sweep.")
    section = {**dataclasses.asdict(SweepConfig()), **raw}
    if section["method"] not in METHODS:
        raise ConfigError(f"sweep.method: expected one of {', '.join(METHODS)}, got {section['method']!r}")
    for key in ("seeds", "heartbeat_interval", "grace_period"):
        _positive(f"sweep.{key}", section[key])
    if not isinstance(section["sampler_seed"], int) or section["sampler_seed"] < 0:
        raise ConfigError(f"sweep.sampler_seed: expected an int >= 0, got {section['sampler_seed']!r}")
    for key in ("num_samples", "population_size", "max_members"):
        _positive(f"sweep.{key}", section[key], allow_none=True)
    params = check_params(section["params"], config, section["method"])
    _check_monitor(section["monitor"], config)
    sampler, pruner = _named("sweep.sampler", section["sampler"]), _named("sweep.pruner", section["pruner"])
    check_sampler(sampler)
    check_pruner(pruner)
    num_samples = section["num_samples"] or 16
    points = len(grid_points(params)) if section["method"] == "grid" else \
        1 if not params else num_samples
    default_population = min(points, 8) if section["method"] == "optuna" else points
    return SweepSpec(
        method=section["method"], seeds=section["seeds"], num_samples=points,
        sampler_seed=section["sampler_seed"], sampler=sampler, pruner=pruner,
        monitor=section["monitor"], mode=_resolve_mode(section["monitor"], section["mode"]),
        population_size=section["population_size"] or default_population,
        max_members=section["max_members"], strategy=section["strategy"],
        storage=section["storage"], study=section["study"],
        heartbeat_interval=section["heartbeat_interval"], grace_period=section["grace_period"],
        params=params)


# ----------------------------------------------------------------------------- swept keys

def _leaf_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key path in a config (mappings walked; lists and scalars are leaves)."""
    keys = []
    for key in node.keys():
        child = node.get(key)
        keys += _leaf_keys(child, f"{prefix}{key}.") if isinstance(child, DictConfig) else [f"{prefix}{key}"]
    return keys


def check_key(key: str, config: DictConfig) -> None:
    """Raises ConfigError unless `key` names a key of `config` (or a new key of a free-form
    mapping such as model.args, whose keys belong to the model function)."""
    if key == "sweep" or key.startswith("sweep."):
        raise ConfigError(f"sweep.params.{key}: the sweep section itself cannot be swept")
    if key.startswith("optimizer.") and key.split(".", 1)[1] in alias_arguments(config.optimizer.name):
        return  # a keyword of the optax alias the base config leaves unset (e.g. rmsprop's decay)
    node: Any = config
    for part in key.split("."):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict:
            return  # a free-form mapping: model.args.dropout is for the model to accept
        else:
            keys = [k for k in _leaf_keys(config) if k != "sweep"]
            hint = did_you_mean(key, keys, quote=False) or "valid keys are those of the base " \
                "config (fdl.config.schema), e.g. optimizer.learning_rate"
            raise ConfigError(f"sweep.params.{key}: not a key of the base config — {hint}")


def apply_point(config: DictConfig, point: dict) -> DictConfig:
    """A copy of `config` with each `key -> value` of `point` set (values type-checked)."""
    config = config.copy()
    for key, value in point.items():
        try:
            OmegaConf.update(config, key, value, merge=False)
        except OmegaConfBaseException as error:
            raise ConfigError(f"sweep.params.{key}: {str(error).splitlines()[0]}") from None
    return config


def _candidates(dist: Distribution) -> list:
    return list(dist.values) if isinstance(dist, Choice) else [dist.low, dist.high]


def check_params(raw: Any, config: DictConfig, method: str) -> dict:
    """`sweep.params` -> {key: Distribution}, each key and candidate value checked on `config`.

    Each candidate (every listed value; both ends of a range) is set on the
    base config, so a wrong type fails here; optimizer and model keys also
    build the optimizer / model to catch a hyperparameter the optimizer does
    not take or a bad model argument.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep.params: expected a mapping of config key -> values, got {raw!r}")
    if not raw and method == "optuna":
        raise ConfigError("sweep.params: optuna needs at least one swept key, e.g. "
                          "optimizer.learning_rate: {loguniform: [1e-4, 1e-1]}")
    params = {}
    for key, body in raw.items():
        where = f"sweep.params.{key}"
        check_key(key, config)
        dist = parse_distribution(where, body)
        for value in _candidates(dist):
            _check_builds(key, apply_point(config, {key: value}))
        params[key] = dist
    return params


def _check_builds(key: str, config: DictConfig) -> None:
    try:
        if key.startswith("optimizer."):
            build_optimizer(config.optimizer)
        elif key.startswith("model."):
            build_model(config.model)
    except ConfigError as error:
        raise ConfigError(f"sweep.params.{key}: {error}") from None


# ----------------------------------------------------------------------------- points and groups

def grid_points(params: dict) -> list[dict]:
    """Every combination of the params' grid values, the first key varying slowest."""
    keys = list(params)
    values = []
    for key in keys:
        try:
            values.append(params[key].grid())
        except ConfigError as error:
            raise ConfigError(f"sweep.params.{key}: {error}") from None
    return [dict(zip(keys, combination)) for combination in itertools.product(*values)]


def random_points(params: dict, num_samples: int, sampler_seed: int) -> list[dict]:
    """`num_samples` independent draws; the same `sampler_seed` gives the same points."""
    rng = np.random.default_rng(sampler_seed)
    return [{key: dist.sample(rng) for key, dist in params.items()} for _ in range(num_samples)]


def initial_points(spec: SweepSpec) -> list[dict]:
    """The points grid and random sweeps train (optuna draws its own: [])."""
    if spec.method == "grid":
        return grid_points(spec.params)
    if spec.method == "random":
        return random_points(spec.params, spec.num_samples, spec.sampler_seed) if spec.params else [{}]
    return []


@dataclasses.dataclass
class Group:
    """Points that share one compiled program, trained by one train_population call.

    Attributes:
      overrides: program-level key -> value shared by the group ({} for the base program).
      config: the base config with `overrides` and the first member's vectorizable
        values set and no sweep section — what `fdl train` would run for that member.
      members: one MemberSpec per member (seed, injected hyperparameters).
      points: per member, its point (swept key -> value).
      point_ids: per member, the index of its point in the list given to group_points.
    """

    overrides: dict
    config: DictConfig
    members: list[MemberSpec]
    points: list[dict]
    point_ids: list[int]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in self.overrides.items()) or "base"


def is_vectorizable(key: str) -> bool:
    return key in VECTORIZABLE


def point_seeds(point: dict, seeds: int, config: DictConfig) -> list[int]:
    """The member seeds of a point: its swept `seed` (else the config's), +0 .. +seeds-1."""
    first = int(point.get("seed", config.seed))
    return [first + i for i in range(seeds)]


def point_config(config: DictConfig, point: dict) -> DictConfig:
    """The base config with `point` applied, no sweep section: a config `fdl train` runs."""
    config = apply_point(config, point)
    config.sweep = None
    return config


def group_points(points: list[dict], spec: SweepSpec, config: DictConfig) -> list[Group]:
    """Splits points into groups by their program-level values; each point gives spec.seeds members.

    A vectorizable optimizer key is injected only when the optimizer has it
    (fdl.optim: a float that is not None). So each group's config takes its
    first member's vectorizable values: a key the base config leaves null
    (sgd's momentum) becomes a float there, injected, and overwritten per
    member by `MemberSpec.hyperparams`.
    """
    groups: dict[str, Group] = {}
    for index, point in enumerate(points):
        program = {k: v for k, v in point.items() if not is_vectorizable(k)}
        group_key = json.dumps(program, sort_keys=True)
        if group_key not in groups:
            groups[group_key] = Group(program, point_config(config, point), [], [], [])
        group = groups[group_key]
        hyperparams = {k.split(".", 1)[1]: float(v) for k, v in point.items()
                       if is_vectorizable(k) and k != "seed"}
        for seed in point_seeds(point, spec.seeds, config):
            group.members.append(MemberSpec(seed, hyperparams))
            group.points.append(point)
            group.point_ids.append(index)
    return list(groups.values())


def groups(spec: SweepSpec, config: DictConfig) -> list[Group]:
    """The populations a grid or random sweep trains (`initial_points` grouped)."""
    return group_points(initial_points(spec), spec, config)
