"""From a loaded config to the objects the library takes: model, optimizer, loss, data.

Each builder reads one config section and raises `ConfigError` naming the key
path when the section asks for something that does not exist.

User components are named by import path, as Hydra's `_target_` does: a layer
spec `{target: mypkg.layers.MyLayer, args: {...}, name: ...}` in model.layers,
`model: {target: mypkg.models.make, args: {...}}`, and callbacks.custom entries
`{target: mypkg.callbacks.Notify, args: {...}}`. The target is called with the
args; its module is imported when the component is built.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fdl import data as fdl_data
from fdl import losses, nn, objectives
from fdl.data.preprocess import stats_arrays
from fdl.data.sources import LOADERS
from fdl.config.load import ConfigError, check_loss_section
from fdl.errors import did_you_mean, unknown_name_message
from fdl.nn.models import MODELS
from fdl.optim import make_optimizer
from fdl.train import callbacks as cb

__all__ = [
    "COMBINATORS", "LAYERS", "AUGMENTS", "import_target", "build_layer", "build_model",
    "build_loss", "build_objective", "optimizer_arguments", "build_optimizer", "build_augment", "PreparedData",
    "build_data", "check_objective_fits_data", "build_custom_callbacks", "build_mlflow_logger",
]


COMBINATORS = {"serial": nn.serial, "parallel": nn.parallel, "residual": nn.residual}
LAYERS: dict[str, Callable[..., nn.Layer]] = {
    name: getattr(nn, name) for name in nn.__all__
    if name[0].isupper() and name not in ("Layer", "ShapeError")
}
AUGMENTS = {"random_shift": fdl_data.random_shift, "random_crop": fdl_data.random_crop,
            "random_flip": fdl_data.random_flip, "gaussian_noise": fdl_data.gaussian_noise}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


_DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_IMPORT_FIX = "give module.attribute of a callable"


def import_target(path: Any, where: str) -> Callable:
    """The callable at the dotted `path` (`module.attribute`), imported now.

    Raises:
      ConfigError: naming `where` (the key path) and `path`, when the path is not
        dotted, the module does not import, it lacks the attribute, or that is
        not callable.
    """
    if not isinstance(path, str) or not _DOTTED_PATH.fullmatch(path):
        raise ConfigError(f"{where}: cannot import {path!r} (not a dotted path) — {_IMPORT_FIX}")
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{where}: cannot import {path!r} ({reason}) — {_IMPORT_FIX}") from None
    if not hasattr(module, attribute):
        hint = did_you_mean(attribute, [name for name in dir(module) if not name.startswith("_")],
                            quote=False, prefix=f"{module_name}.")
        also = f"; {hint}" if hint else ""
        raise ConfigError(f"{where}: cannot import {path!r} (module {module_name!r} has no attribute "
                          f"{attribute!r}{also}) — {_IMPORT_FIX}")
    target = getattr(module, attribute)
    if not callable(target):
        raise ConfigError(f"{where}: {path!r} is of type {type(target).__name__}, not a callable — {_IMPORT_FIX}")
    return target


def _target_spec(spec: dict, where: str, keys: tuple[str, ...]) -> tuple[str, dict]:
    """Checks a `{target: ..., args: {...}}` mapping; returns (target, args)."""
    for key in spec:
        if key not in keys:
            hint = did_you_mean(key, keys, quote=False, prefix=f"{where}.") or f"valid: {', '.join(keys)}"
            raise ConfigError(f"{where}.{key}: unknown key — {hint}")
    if spec.get("target") is None:
        raise ConfigError(f"{where}.target: missing — give {{target: module.attribute, args: {{...}}}}")
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{where}.args: expected a mapping of keyword arguments, got {args!r}")
    return spec["target"], args


def _call_target(target: Callable, path: str, args: dict, where: str) -> Any:
    try:
        return target(**args)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where} {path}: {error}") from None


def _built_layer(layer: Any, path: str, where: str) -> nn.Layer:
    if not isinstance(layer, nn.Layer):
        raise ConfigError(f"{where}: {path} returned {type(layer).__name__}, not an fdl.nn.Layer — "
                          "return a Layer (an init/apply pair, see fdl.nn.core.Layer)")
    return layer


def _single_entry(spec: Any, where: str, what: str) -> tuple[str, Any]:
    """`"Relu"` -> ("Relu", None); `{Dense: {features: 10}}` -> ("Dense", {...})."""
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, dict) and len(spec) == 1:
        return next(iter(spec.items()))
    raise ConfigError(f"{where}: expected a {what} name or a one-key mapping such as "
                      f"{{Dense: {{features: 10}}}}, got {spec!r}")


def build_layer(spec: Any, where: str = "model.layers") -> nn.Layer:
    """One layer spec: a name, `{Kind: {kwargs}}`, `{serial|parallel|residual: [specs]}`, or
    `{target: module.attribute, args: {kwargs}, name: ...}` (a user's function returning a Layer).

    A `name` keyword gives the layer a user name (its params key).
    """
    if isinstance(spec, dict) and "target" in spec:
        path, arguments = _target_spec(spec, where, ("target", "args", "name"))
        target = import_target(path, f"{where}.target")
        layer = _built_layer(_call_target(target, path, arguments, where), path, f"{where}.target")
        try:
            return nn.named(spec["name"], layer) if spec.get("name") else layer
        except ValueError as error:
            raise ConfigError(f"{where}.name: {error}") from None
    kind, arguments = _single_entry(spec, where, "layer")
    if kind in COMBINATORS:
        if not isinstance(arguments, list):
            raise ConfigError(f"{where}.{kind}: expected a list of layer specs")
        return COMBINATORS[kind](*[build_layer(s, f"{where}.{kind}[{i}]") for i, s in enumerate(arguments)])
    if kind not in LAYERS:
        raise ConfigError(f"{where}: {unknown_name_message('layer', kind, [*LAYERS, *COMBINATORS])}")
    arguments = dict(arguments or {})
    name = arguments.pop("name", None)
    try:
        layer = LAYERS[kind](**arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where} {kind}: {error}") from None
    return nn.named(name, layer) if name else layer


def build_model(section: DictConfig) -> nn.Layer:
    """A Layer from `model.name` + `model.args`, `model.target` + `model.args`, or `model.layers`."""
    if section.name is not None:
        if section.name not in MODELS:
            raise ConfigError(f"model.name: {unknown_name_message('model', section.name, MODELS)}")
        try:
            return MODELS[section.name](**_plain(section.args))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.args ({section.name}): {error}") from None
    path = section.get("target")
    if path is not None:
        target = import_target(path, "model.target")
        try:
            model = target(**_plain(section.args))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.args ({path}): {error}") from None
        return _built_layer(model, path, "model.target")
    if section.layers is None:
        raise ConfigError("model: give model.name, model.layers or model.target")
    specs = _plain(section.layers)
    return nn.serial(*[build_layer(s, f"model.layers[{i}]") for i, s in enumerate(specs)])


def build_loss(section: DictConfig) -> losses.NamedLoss:
    """The loss of `loss: {name, args}`: equal sections give equal (and hash-equal) losses.

    Null args are unset (the loss's default).
    """
    check_loss_section(section)
    args = {key: value for key, value in (_plain(section.get("args")) or {}).items() if value is not None}
    try:
        return losses.get_loss(section.name, **args)
    except ValueError as error:
        raise ConfigError(f"loss.args: {error}") from None


def build_objective(section: DictConfig | None):
    """The objective of `objective: {name, args}` (fdl.objectives), or None without the section."""
    if section is None:
        return None
    args = {key: value for key, value in (_plain(section.get("args")) or {}).items() if value is not None}
    try:
        return objectives.get_objective(section.name, **args)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"objective: {error}") from None


def optimizer_arguments(section: DictConfig) -> dict:
    """The keyword arguments of fdl.optim.make_optimizer; unset hyperparameters are left out."""
    return {k: v for k, v in _plain(section).items() if v is not None}


def build_optimizer(section: DictConfig):
    """The optax optimizer of `optimizer:` (fdl.optim.make_optimizer with the section's set keys).

    load_config has checked the keys against the alias already; make_optimizer checks them again
    here for sections made otherwise (a sweep point).
    """
    try:
        return make_optimizer(**optimizer_arguments(section))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer: {error}") from None


def build_augment(section: DictConfig):
    """The per-example augmentation pipeline of `data.augment`, or None."""
    stages = []
    for i, spec in enumerate(_plain(section.augment)):
        where = f"data.augment[{i}]"
        kind, arguments = _single_entry(spec, where, "augmentation")
        if kind not in AUGMENTS:
            raise ConfigError(f"{where}: {unknown_name_message('augmentation', kind, AUGMENTS)}")
        try:
            stages.append(AUGMENTS[kind](**(arguments or {})))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where} {kind}: {error}") from None
    return fdl_data.compose(*stages) if stages else None


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The dataset as training sees it, and the fitted preprocessing to reapply at predict time."""

    dataset: fdl_data.Dataset
    preprocess: str | None
    stats: dict[str, np.ndarray] | None


def build_data(section: DictConfig, seed: int) -> PreparedData:
    """Loads, restricts, re-targets, splits and preprocesses the data of `data:`.

    A loader that takes `val_fraction` (text: windows overlap, so it splits the bytes
    by position) gets `data.val_fraction` unless `data.args` gives it.
    """
    args = _plain(section.args)
    loader = LOADERS.get(section.name)
    if loader is not None and "val_fraction" in inspect.signature(loader).parameters:
        args.setdefault("val_fraction", section.val_fraction)
    try:
        dataset = fdl_data.load(section.name, section.path, **args)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"data: {error}") from None
    if section.limit_train is not None:
        dataset = dataclasses.replace(dataset, train=_first(dataset.train, section.limit_train))
    if dataset.val is None and section.val_fraction > 0:
        dataset = fdl_data.train_val_split(dataset, section.val_fraction,
                                           stratify=dataset.num_classes is not None, seed=seed)
    stats = None
    if section.preprocess is not None:
        try:
            dataset, fitted = fdl_data.preprocess(dataset, section.preprocess)
        except ValueError as error:
            raise ConfigError(f"data.preprocess: {error}") from None
        stats = stats_arrays(fitted)  # flat: a/mean, a/scale, ... for a model's dict of inputs
    # After preprocessing, so an autoencoder's targets are its preprocessed inputs.
    return PreparedData(_retarget(dataset, section), section.preprocess, stats)


def _first(split: fdl_data.Split, n: int) -> fdl_data.Split:
    x = {key: value[:n] for key, value in split.x.items()} if isinstance(split.x, Mapping) else split.x[:n]
    return fdl_data.Split(x, None if split.y is None else split.y[:n])


def check_objective_fits_data(config: DictConfig, dataset: fdl_data.Dataset) -> None:
    """Data whose splits hold dicts of examples without labels (data.name: text) is trained by an objective
    (a dict of a model's inputs with labels, data.args.x_key: [a, b], trains with the loss).

    Raises:
      ConfigError: no `objective:` section, or `metrics:` (the objective reports its own
        logs, e.g. bits_per_token), naming the dict's keys.
    """
    if not isinstance(dataset.train.x, Mapping) or dataset.train.y is not None:
        return
    keys = ", ".join(dataset.train.x)
    if config.get("objective") is None:
        raise ConfigError(f"objective: data {config.data.name!r} gives examples {{{keys}}}, not (x, y) — add "
                          "objective: {name: masked_sequence_cross_entropy} (or another that reads them)")
    if list(config.metrics):
        raise ConfigError(f"metrics: {', '.join(config.metrics)} need (x, y) data, but data {config.data.name!r} "
                          f"gives {{{keys}}} — use metrics: [] (the objective logs its own, e.g. bits_per_token)")


def _retarget(dataset: fdl_data.Dataset, section: DictConfig) -> fdl_data.Dataset:
    """Applies `data.target`: labels as they are, the input itself, or one class against the rest."""
    if section.target == "label":
        return dataset
    if section.target == "input":
        splits = {name: fdl_data.Split(s.x, s.x) for name, s in dataset.splits().items()}
        return dataclasses.replace(dataset, num_classes=None, class_names=None, **splits)
    if section.target == "one_vs_rest":
        positive = section.positive_class
        if positive is None or dataset.num_classes is None or not 0 <= positive < dataset.num_classes:
            raise ConfigError(f"data.positive_class: expected a class in [0, {dataset.num_classes}) "
                              f"with target one_vs_rest, got {positive}")
        splits = {name: fdl_data.Split(s.x, (s.y == positive).astype(np.float32)[:, None])
                  for name, s in dataset.splits().items()}
        return dataclasses.replace(dataset, num_classes=2, class_names=("rest", str(positive)),
                                   **splits)
    raise ConfigError(f"data.target: expected 'label', 'input' or 'one_vs_rest', got {section.target!r}")


def build_custom_callbacks(config: DictConfig) -> list:
    """The user callbacks of `callbacks.custom`: each `{target: module.attribute, args: {...}}`
    called with its args, in order. A target returns an fdl.train.callbacks.Callback or a
    function `fn(epoch, logs)`.
    """
    built = []
    for i, spec in enumerate(_plain(config.callbacks.get("custom")) or []):
        where = f"callbacks.custom[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected {{target: module.attribute, args: {{...}}}}, got {spec!r}")
        path, arguments = _target_spec(spec, where, ("target", "args"))
        callback = _call_target(import_target(path, f"{where}.target"), path, arguments, where)
        if not (isinstance(callback, cb.Callback) or callable(callback)):
            raise ConfigError(f"{where}.target: {path} returned {type(callback).__name__}, not a callback "
                              "— return an fdl.train.callbacks.Callback or a function fn(epoch, logs)")
        built.append(callback)
    return built


def build_mlflow_logger(config: DictConfig, run_name: str | None = None, tags: Mapping | None = None):
    """`output.mlflow` as an fdl.records.mlflow.MLflowLogger, or None when the section is unset.

    Its params are the whole resolved config as dotted keys; the experiment is
    `output.mlflow.experiment` or the config's name, the run name
    `output.mlflow.run_name` or `run_name` (`fdl train` gives the run directory's).

    Raises:
      ConfigError: mlflow is not installed, or the tracking store refuses the URI
        or the experiment (one line, naming output.mlflow).
    """
    section = config.output.get("mlflow")
    if section is None:
        return None
    from fdl.records.mlflow import MLflowLogger  # mlflow: the `mlflow` extra, imported only when asked for

    try:
        return MLflowLogger(section.tracking_uri, section.experiment or config.name, section.run_name or run_name,
                            params=_plain(config), tags=tags)
    except (ImportError, ValueError) as error:
        raise ConfigError(f"output.mlflow: {error}") from None
