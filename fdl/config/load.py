"""Loading a run config: YAML -> checked keys -> typed OmegaConf merge -> overrides.

    cfg = load_config("configs/mnist1d_cnn.yaml", overrides=["optimizer.learning_rate=3e-4"])

A file may extend others with `defaults: base.yaml` (or a list), paths relative
to the file; later files and then the overrides win. Every problem is a
one-line `ConfigError` naming the file and the key path.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fdl.config.schema import RunConfig


class ConfigError(ValueError):
    """A config problem, said in one line with the key path and the fix."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML's YAML 1.1 rules read `1e-3` (no dot) as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _parse_yaml(text):
    return yaml.load(text, Loader=_Loader)


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist — pass the path of a YAML file "
                          "such as configs/mnist1d_cnn.yaml")
    with open(path) as file:
        try:
            content = _parse_yaml(file)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top, got "
                          f"{type(content).__name__}")
    return content


def _with_defaults(path: str, seen: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """The files to merge, bases first: [(path, raw dict)]."""
    path = os.path.normpath(path)
    if path in seen:
        raise ConfigError(f"{path}: 'defaults' loops back to itself through {' -> '.join(seen)}")
    raw = _read_yaml(path)
    bases = raw.pop("defaults", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    chain = []
    for base in bases:
        chain += _with_defaults(os.path.join(os.path.dirname(path), base), seen + (path,))
    return chain + [(path, raw)]


def _shorthand(raw: dict) -> dict:
    """`model: [layers...]` -> `model: {layers: [...]}`; `loss: mse` -> `loss: {name: mse}`."""
    raw = dict(raw)
    if isinstance(raw.get("model"), list):
        raw["model"] = {"layers": raw["model"]}
    if isinstance(raw.get("loss"), str):
        raw["loss"] = {"name": raw["loss"]}
    return raw


def _schema_fields(schema) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def check_keys(raw: dict, schema=RunConfig, prefix: str = "", source: str = "") -> None:
    """Raises ConfigError for the first key of `raw` that `schema` does not have."""
    fields = _schema_fields(schema)
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"valid: {', '.join(fields)}"
            where = f"{source}: " if source else ""
            raise ConfigError(f"{where}{path}: unknown key — {hint}")
        if dataclasses.is_dataclass(fields[key]) and isinstance(value, dict):
            check_keys(value, fields[key], f"{path}.", source)


def _merge(base: DictConfig, raw: dict, source: str) -> DictConfig:
    check_keys(raw, source=source)
    try:
        return OmegaConf.merge(base, raw)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or "config"
        message = str(error).splitlines()[0]
        raise ConfigError(f"{source}: {key}: {message}") from None


def parse_overrides(overrides: Sequence[str]) -> dict:
    """`["optimizer.learning_rate=3e-4", ...]` -> a nested dict with YAML-typed values."""
    nested: dict = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.learning_rate=3e-4")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _parse_yaml(text) if text.strip() else None
    return nested


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """Loads, checks and types a run config; returns an OmegaConf DictConfig of RunConfig.

    Raises:
      ConfigError: missing file, bad YAML, an unknown key (with a suggestion),
        a wrong type, or a bad override — one line naming the key path.
    """
    path = os.fspath(path)
    config = OmegaConf.structured(RunConfig)
    for source, raw in _with_defaults(path):
        config = _merge(config, _shorthand(raw), source)
    if overrides:
        config = _merge(config, _shorthand(parse_overrides(overrides)), "--set")
    if config.name is None:
        config.name = os.path.splitext(os.path.basename(path))[0]
    _check_model_section(config)
    return config


def _check_model_section(config: DictConfig) -> None:
    has_name, has_layers = config.model.name is not None, config.model.layers is not None
    if has_name == has_layers:
        raise ConfigError("model: give either model.name (a registered model) or model.layers "
                          "(a list of layer specs), " + ("not both — clear the other, e.g. --set "
                                                         "model.layers=null" if has_name else "none is set"))


def to_yaml(config: DictConfig) -> str:
    """The fully resolved config as YAML (what a run directory's config.yaml holds)."""
    return OmegaConf.to_yaml(config, resolve=True)
