"""From a loaded config to the objects the library takes: model, optimizer, loss, data.

Each builder reads one config section and raises `ConfigError` naming the key
path when the section asks for something that does not exist.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fdl import data as fdl_data
from fdl import losses, nn
from fdl.config.load import ConfigError
from fdl.errors import unknown_name_message
from fdl.nn.models import MODELS
from fdl.optim import make_optimizer
from fdl.train import callbacks as cb

COMBINATORS = {"serial": nn.serial, "parallel": nn.parallel, "residual": nn.residual}
LAYERS: dict[str, Callable[..., nn.Layer]] = {
    name: getattr(nn, name) for name in nn.__all__
    if name[0].isupper() and name not in ("Layer", "ShapeError")
}
AUGMENTS = {"random_shift": fdl_data.random_shift, "random_crop": fdl_data.random_crop,
            "random_flip": fdl_data.random_flip, "gaussian_noise": fdl_data.gaussian_noise}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _single_entry(spec: Any, where: str, what: str) -> tuple[str, Any]:
    """`"Relu"` -> ("Relu", None); `{Dense: {features: 10}}` -> ("Dense", {...})."""
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, dict) and len(spec) == 1:
        return next(iter(spec.items()))
    raise ConfigError(f"{where}: expected a {what} name or a one-key mapping such as "
                      f"{{Dense: {{features: 10}}}}, got {spec!r}")


def build_layer(spec: Any, where: str = "model.layers") -> nn.Layer:
    """One layer spec: a name, `{Kind: {kwargs}}`, or `{serial|parallel|residual: [specs]}`.

    A `name` keyword gives the layer a user name (its params key).
    """
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
    """A Layer from `model.name` + `model.args`, or from `model.layers`."""
    if section.name is not None:
        if section.name not in MODELS:
            raise ConfigError(f"model.name: {unknown_name_message('model', section.name, MODELS)}")
        try:
            return MODELS[section.name](**_plain(section.args))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.args ({section.name}): {error}") from None
    specs = _plain(section.layers)
    return nn.serial(*[build_layer(s, f"model.layers[{i}]") for i, s in enumerate(specs)])


def build_loss(section: DictConfig) -> losses.Loss:
    if section.name not in losses.LOSSES:
        raise ConfigError(f"loss.name: {unknown_name_message('loss', section.name, losses.LOSSES)}")
    if section.name == "cross_entropy" and section.label_smoothing:
        return losses.cross_entropy_with(label_smoothing=section.label_smoothing)
    if section.name == "huber" and section.delta != 1.0:
        return lambda output, target: losses.huber(output, target, delta=section.delta)
    return losses.LOSSES[section.name]


def optimizer_arguments(section: DictConfig) -> dict:
    """The keyword arguments of fdl.optim.make_optimizer; unset hyperparameters are left out."""
    return {k: v for k, v in _plain(section).items() if v is not None}


def build_optimizer(section: DictConfig):
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
    """Loads, restricts, re-targets, splits and preprocesses the data of `data:`."""
    try:
        dataset = fdl_data.load(section.name, section.path, **_plain(section.args))
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
        stats = {k: np.asarray(v) for k, v in fitted._asdict().items()}
    # After preprocessing, so an autoencoder's targets are its preprocessed inputs.
    return PreparedData(_retarget(dataset, section), section.preprocess, stats)


def _first(split: fdl_data.Split, n: int) -> fdl_data.Split:
    return fdl_data.Split(split.x[:n], None if split.y is None else split.y[:n])


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


def build_callbacks(config: DictConfig, checkpoint_dir: str | None) -> list:
    """EarlyStopping, ReduceLROnPlateau and ModelCheckpoint as the config asks."""
    section, built = config.callbacks, []
    stop = section.early_stopping
    if stop.enabled:
        built.append(cb.EarlyStopping(stop.monitor, patience=stop.patience, mode=stop.mode,
                                      min_delta=stop.min_delta, restore_best=stop.restore_best))
    plateau = section.reduce_lr_on_plateau
    if plateau.enabled:
        built.append(cb.ReduceLROnPlateau(plateau.monitor, factor=plateau.factor,
                                          patience=plateau.patience, mode=plateau.mode,
                                          min_learning_rate=plateau.min_learning_rate))
    if checkpoint_dir is not None:
        built.append(cb.ModelCheckpoint(checkpoint_dir, monitor=section.checkpoint.monitor,
                                        mode=section.checkpoint.mode))
    return built
