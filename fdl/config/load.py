"""Loading a run config: YAML -> checked keys -> typed OmegaConf merge -> overrides.

    cfg = load_config("configs/mnist1d_cnn.yaml", overrides=["optimizer.learning_rate=3e-4"])

A file may extend others with `defaults: base.yaml` (or a list), paths relative
to the file; later files and then the overrides win. Every problem is a
one-line `ConfigError` naming the file and the key path.

Two sections hold keys that belong to a function, checked once everything is
merged (a later file or `--set` may change the function): `loss.args` against
the loss's keyword arguments (fdl.losses), and the optimizer section's keys
beyond its typed ones against the optax alias's signature (fdl.optim). In both,
a null value means "unset": the function's default.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
import typing
from typing import Any, Mapping, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fdl import losses
from fdl.config.schema import OptimizerConfig, RunConfig
from fdl.errors import closest, did_you_mean, unknown_name_message
from fdl.optim import OPTIMIZERS

# The keys of the optimizer section that fdl.optim.make_optimizer itself takes; any
# other key is an argument of the optax alias.
__all__ = [
    "COMMON_OPTIMIZER_KEYS", "ConfigError", "alias_arguments", "check_keys", "check_optimizer_section",
    "check_loss_section", "merge_config", "parse_overrides", "load_config", "to_yaml",
]


COMMON_OPTIMIZER_KEYS = ("name", "learning_rate", "schedule", "clip_global_norm", "weight_decay",
                         "accumulate_steps")
# Sections that take keys beyond their schema's (checked after the merge, see above).
_OPEN_SECTIONS = (OptimizerConfig,)
# Keys of the loss section before loss.args, with their old defaults: run directories
# written then still load (a non-default value moves to loss.args, where it is checked).
_LEGACY_LOSS_KEYS = {"label_smoothing": 0.0, "delta": 1.0}


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


def _read_yaml(path: str) -> dict | None:
    """The file's top-level mapping; None for a file with nothing in it (or only comments)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist — pass the path of a YAML file "
                          "such as configs/mnist1d_cnn.yaml")
    text = _read_utf8(path)
    try:
        content = _parse_yaml(text)
    except yaml.YAMLError as error:
        raise _yaml_error(path, error, text) from None
    if content is not None and not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top, got "
                          f"{type(content).__name__}")
    return content


def _read_utf8(path: str) -> str:
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}: not UTF-8 at byte {error.start} (line {line}, byte 0x{data[error.start]:02x}) "
                          "— save the file as UTF-8") from None


def _yaml_error(path: str, error: yaml.YAMLError, text: str) -> ConfigError:
    """`path line N: not valid YAML (problem)`, with the line where PyYAML found the problem."""
    mark = getattr(error, "problem_mark", None)
    if isinstance(error, yaml.reader.ReaderError):  # a control character, given as an offset in the text
        line = text.count("\n", 0, error.position) + 1
        problem = f"character #x{error.character:04x} is not allowed"
    else:
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return ConfigError(f"{path}{f' line {line}' if line else ''}: not valid YAML ({problem})")


def _with_defaults(path: str, seen: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """The files to merge, bases first: [(path, raw dict)]."""
    path = os.path.normpath(path)
    if path in seen:
        raise ConfigError(f"{path}: 'defaults' loops back to itself through {' -> '.join(seen)}")
    raw = _read_yaml(path)
    if raw is None:
        if not seen:  # an empty base adds nothing; an empty config is a mistake
            raise ConfigError(f"{path}: the file is empty — a config needs at least a model: "
                              "section, see configs/mnist1d_mlp.yaml")
        raw = {}
    bases = raw.pop("defaults", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise ConfigError(f"{path}: defaults: expected a file name or a list of file names, got {bases!r}")
    chain = []
    for base in bases:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: defaults: {base!r} does not exist (looked for {base_path})")
        chain += _with_defaults(base_path, seen + (path,))
    return chain + [(path, raw)]


def _shorthand(raw: dict) -> dict:
    """`model: [layers...]` -> `model: {layers: [...]}`; `loss: mse` -> `loss: {name: mse}`."""
    raw = dict(raw)
    if isinstance(raw.get("model"), list):
        raw["model"] = {"layers": raw["model"]}
    if isinstance(raw.get("loss"), str):
        raw["loss"] = {"name": raw["loss"]}
    loss = raw.get("loss")
    if isinstance(loss, dict) and _LEGACY_LOSS_KEYS.keys() & loss.keys():
        loss = dict(loss)
        moved = {key: loss.pop(key) for key in _LEGACY_LOSS_KEYS if key in loss}
        args = {**{key: value for key, value in moved.items() if value != _LEGACY_LOSS_KEYS[key]},
                **(loss.get("args") or {})}
        raw["loss"] = {**loss, "args": args} if args else loss
    return raw


def _schema_fields(schema) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _section_schema(hint: Any) -> type | None:
    """The dataclass of a field typed `Section` or `Optional[Section]`, else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    arguments = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(arguments) == 1 and dataclasses.is_dataclass(arguments[0]):
        return arguments[0]
    return None


def check_keys(raw: dict, schema=RunConfig, prefix: str = "", source: str = "") -> None:
    """Raises ConfigError for the first key of `raw` that `schema` does not have.

    The optimizer section's extra keys are left to `check_optimizer_section`.
    """
    fields = _schema_fields(schema)
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            if schema in _OPEN_SECTIONS:
                continue
            hint = did_you_mean(key, fields, quote=False, prefix=prefix) or f"valid: {', '.join(fields)}"
            where = f"{source}: " if source else ""
            raise ConfigError(f"{where}{path}: unknown key — {hint}")
        section = _section_schema(fields[key])
        if section is not None and isinstance(value, dict):
            check_keys(value, section, f"{path}.", source)


def _note_origins(raw: dict, source: str, origins: dict[str, str]) -> None:
    """Records which file (or --set) last gave each loss and optimizer key, for later errors."""
    for section in ("loss", "optimizer"):
        for key, value in (raw.get(section) or {}).items():
            origins[f"{section}.{key}"] = source
            if section == "loss" and key == "args" and isinstance(value, dict):
                origins.update({f"loss.args.{name}": source for name in value})


def _origin(origins: Mapping[str, str] | None, key: str) -> str:
    source = (origins or {}).get(key)
    return f"{source}: " if source else ""


def alias_arguments(name: str) -> list[str]:
    """The arguments of optax alias `name` the section may set (learning_rate is typed)."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [key for key, parameter in inspect.signature(OPTIMIZERS[name]).parameters.items()
            if key != "learning_rate" and parameter.kind not in variadic]


def check_optimizer_section(section: Mapping, origins: Mapping[str, str] | None = None) -> None:
    """Raises ConfigError unless every set key of `optimizer:` is typed or an argument of its alias.

    Args:
      section: the optimizer section (a DictConfig or a dict).
      origins: key path -> the file (or "--set") that gave it, to name in the error.
    """
    name = section.get("name", "adam")
    if name not in OPTIMIZERS:
        raise ConfigError(f"{_origin(origins, 'optimizer.name')}optimizer.name: "
                          f"{unknown_name_message('optimizer', name, OPTIMIZERS)}")
    arguments = alias_arguments(name)
    for key, value in section.items():
        if key in COMMON_OPTIMIZER_KEYS or key in arguments or value is None:
            continue
        match = closest(key, [*COMMON_OPTIMIZER_KEYS, *arguments])
        problem = "unknown key" if match in COMMON_OPTIMIZER_KEYS else f"not an argument of optax {name}"
        hint = did_you_mean(key, [*COMMON_OPTIMIZER_KEYS, *arguments], quote=False, prefix="optimizer.") or \
            f"valid: {', '.join([*COMMON_OPTIMIZER_KEYS[1:], *arguments])}"
        raise ConfigError(f"{_origin(origins, f'optimizer.{key}')}optimizer.{key}: {problem} — {hint}")


def check_loss_section(section: Mapping, origins: Mapping[str, str] | None = None) -> None:
    """Raises ConfigError unless `loss.name` is a loss and `loss.args` are arguments it takes.

    Args:
      section: the loss section (a DictConfig or a dict); null args are unset.
      origins: key path -> the file (or "--set") that gave it, to name in the error.
    """
    name = section.get("name", "cross_entropy")
    if name not in losses.LOSSES:
        raise ConfigError(f"{_origin(origins, 'loss.name')}loss.name: "
                          f"{unknown_name_message('loss', name, losses.LOSSES)}")
    args = section.get("args") or {}
    args = OmegaConf.to_container(args, resolve=True) if OmegaConf.is_config(args) else dict(args)
    for key, value in args.items():
        if value is None:
            continue
        try:
            losses.check_argument(name, key, value)
        except ValueError as error:
            raise ConfigError(f"{_origin(origins, f'loss.args.{key}')}loss.args.{key}: {error}") from None


def _check_model_section(config: DictConfig) -> None:
    given = [key for key in ("name", "layers", "target") if config.model[key] is not None]
    if len(given) != 1:
        problem = ("none is set" if not given else
                   f"not {' and '.join(f'model.{key}' for key in given)} — clear all but one, e.g. "
                   f"--set model.{given[-1]}=null")
        raise ConfigError("model: give one of model.name (a registered model), model.layers (a list "
                          f"of layer specs) or model.target (module.attribute of a function), {problem}")


def _check_sample_section(config: DictConfig) -> None:
    """`sample:` draws bytes, so it needs the byte tokens of `data.name: text`, a prompt and sane numbers."""
    sample = config.get("sample")
    if sample is None:
        return
    if config.data.name != "text":
        raise ConfigError(f"sample: needs byte tokens (data.name: text), but data.name is {config.data.name!r} "
                          "— remove the sample: section")
    if not sample.prompt:
        raise ConfigError("sample.prompt: empty — give the text to continue, e.g. 'The '")
    if sample.length < 1:
        raise ConfigError(f"sample.length: must be >= 1, got {sample.length}")
    if sample.temperature < 0:
        raise ConfigError(f"sample.temperature: must be >= 0 (0: greedy), got {sample.temperature}")


def _check(config: DictConfig, origins: Mapping[str, str]) -> None:
    """The checks that need the merged config: the loss's and optimizer's arguments, one model, sample."""
    check_loss_section(config.loss, origins)
    check_optimizer_section(config.optimizer, origins)
    _check_model_section(config)
    _check_sample_section(config)


def _shape_mismatch(raw: dict, schema=RunConfig, prefix: str = "") -> str | None:
    """The first key where `raw` gives a mapping for a list or a list for a mapping, said as an error."""
    fields = _schema_fields(schema)
    for key, value in raw.items():
        if key not in fields:
            continue
        section = _section_schema(fields[key])
        kinds = {typing.get_origin(hint) for hint in (fields[key], *typing.get_args(fields[key]))}
        if isinstance(value, dict) and list in kinds:
            return f"{prefix}{key}: expected a list, got a mapping"
        if isinstance(value, list) and (section is not None or dict in kinds):
            return f"{prefix}{key}: expected a mapping, got a list"
        if section is not None and isinstance(value, dict):
            found = _shape_mismatch(value, section, f"{prefix}{key}.")
            if found:
                return found
    return None


def _merge(base: DictConfig, raw: dict, source: str) -> DictConfig:
    check_keys(raw, source=source)
    where = f"{source}: " if source else ""
    try:
        return OmegaConf.merge(base, raw)
    except (OmegaConfBaseException, TypeError) as error:
        # A list for a mapping (or the reverse) comes without a key path: find it.
        key = getattr(error, "full_key", "")
        message = _shape_mismatch(raw) if not key else None
        raise ConfigError(where + (message or f"{key or 'config'}: {str(error).splitlines()[0]}")) from None


def _schema_config() -> DictConfig:
    """The RunConfig defaults, with the optimizer section open to its alias's arguments."""
    config = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(config.optimizer, False)
    return config


def merge_config(config: DictConfig, raw: dict, source: str = "") -> DictConfig:
    """A copy of a loaded `config` with the plain mapping `raw` merged in, checked as load_config checks.

    Sets a whole typed section from a dict, which plain assignment refuses, e.g.
    `merge_config(config, {"sweep": {"method": "grid", "params": {...}}})`.

    Raises:
      ConfigError: an unknown key (with a suggestion), a wrong type, a bad loss or
        optimizer argument — one line, prefixed with `source` when given.
    """
    raw = _shorthand(raw)
    merged = _merge(config, raw, source)
    origins: dict[str, str] = {}
    _note_origins(raw, source, origins)
    _check(merged, origins)
    return merged


def parse_overrides(overrides: Sequence[str]) -> dict:
    """`["optimizer.learning_rate=3e-4", ...]` -> a nested dict with YAML-typed values."""
    nested: dict = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.learning_rate=3e-4")
        node = nested
        *parents, leaf = key.strip().split(".")
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                given = ".".join(parents[:depth + 1])
                raise ConfigError(f"--set {item!r}: an earlier --set gave {given} the value {node!r}, which "
                                  f"has no keys — set {given}.KEY=VALUE for each key instead")
        node[leaf] = _parse_yaml(text) if text.strip() else None
    return nested


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """Loads, checks and types a run config; returns an OmegaConf DictConfig of RunConfig.

    Raises:
      ConfigError: missing or empty file, a missing defaults file, a file that
        is not UTF-8 (the byte offset) or not YAML (the line), an
        unknown key (with a suggestion), a wrong type, a loss or optimizer
        argument its function does not take, or a bad override — one line
        naming the file and the key path.
    """
    path = os.fspath(path)
    config, origins = _schema_config(), {}
    sources = _with_defaults(path)
    if overrides:
        sources.append(("--set", parse_overrides(overrides)))
    for source, raw in sources:
        raw = _shorthand(raw)
        config = _merge(config, raw, source)
        _note_origins(raw, source, origins)
    if config.name is None:
        config.name = os.path.splitext(os.path.basename(path))[0]
    _check(config, origins)
    return config


def to_yaml(config: DictConfig) -> str:
    """The fully resolved config as YAML (what a run directory's config.yaml holds)."""
    return OmegaConf.to_yaml(config, resolve=True)
