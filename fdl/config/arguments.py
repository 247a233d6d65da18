"""The arguments of a run, built from a config in ONE place for `fdl train` and `fdl sweep`.

    arguments = build_arguments(load_config("configs/mnist1d_mlp.yaml"))
    state, history = fdl.fit(arguments.model, arguments.data.dataset.train,
                             val=arguments.data.dataset.val, **arguments.fit_arguments())
    result = fdl.population.train_population(arguments.model, ..., **arguments.population_arguments())

Every key of the `training:` and `callbacks:` sections reaches `fit` from here,
and a population gets the same values; a key a population cannot honour is a
one-line ConfigError naming it (`population_arguments`), never dropped.
"""
from __future__ import annotations

import dataclasses

import jax
from omegaconf import DictConfig, OmegaConf

from fdl import nn
from fdl.config.build import (PreparedData, build_augment, build_custom_callbacks, build_data, build_loss,
                              build_model, build_objective, build_optimizer, check_objective_fits_data,
                              optimizer_arguments)
from fdl.config.load import ConfigError
from fdl.nn.core import ShapeError, as_shape
from fdl.population.members import population_mesh
from fdl.train import callbacks as cb
from fdl.train.checks import check_positive_int
from fdl.train.mesh import SHARD_PARAMS, check_divisible, data_mesh
from fdl.train.precision import PRECISIONS

__all__ = ["RunArguments", "build_arguments", "check_model_fits_data", "check_population_keys",
           "CLASSIFICATION_METRICS"]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "confusion_matrix", "roc_auc", "top")


def check_model_fits_data(model: nn.Layer, input_shape) -> tuple:
    """The model's output shape for the data's examples, or a ConfigError saying why not."""
    try:
        return nn.output_shape(model, input_shape)
    except ShapeError as error:
        raise ConfigError(f"model: {error} (the data's examples have shape {tuple(input_shape)})") from None


def _check_metrics(config: DictConfig) -> None:
    """A model that reconstructs its input gets no classification metric."""
    if config.data.target != "input":
        return
    wrong = [m for m in config.metrics if str(m).startswith(CLASSIFICATION_METRICS)]
    if wrong:
        raise ConfigError(f"metrics: {', '.join(wrong)} need class labels, but data.target is 'input' "
                          "(the model reconstructs its input) — use metrics: [mse, mae] or []")


def build_precision(name: str) -> str:
    """`training.precision`, checked (fdl.train.precision)."""
    if name not in PRECISIONS:
        raise ConfigError(f"training.precision: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def build_mesh(devices, shard_params=None, model_axis=None):
    """`training.devices` as fit's `mesh` (fdl.train.mesh): None, or a mesh over N local devices
    (with `training.model_axis` of them on a "model" axis); `training.shard_params` checked against it."""
    if shard_params not in SHARD_PARAMS:
        raise ConfigError(f"training.shard_params: expected null (replicated) or fsdp, got {shard_params!r}")
    if devices is None:
        for key, value in (("shard_params", shard_params), ("model_axis", model_axis)):
            if value is not None:
                raise ConfigError(f"training.{key}: {value} splits the state over devices — set "
                                  "training.devices (or --devices N|all) as well")
        return None
    try:
        return data_mesh(devices, model=1 if model_axis is None else model_axis)
    except ValueError as error:
        key = "model_axis" if str(error).startswith("model:") else "devices"
        raise ConfigError(f"training.{key}: {str(error).split(': ', 1)[1]}") from None


def build_population_mesh(devices, batch_size: int | None = None):
    """`training.devices` in a sweep as the population's `mesh` (fdl.population.members.population_mesh):
    None (every device on "population", a member a device), or each member's batches split over
    `devices` devices ("all": every one) on "data", the members over the rest; `training.batch_size`
    checked against it when given."""
    if devices is None:
        return None
    try:
        mesh = population_mesh(len(jax.devices()) if devices == "all" else devices, name="training.devices")
        if batch_size is not None:
            check_divisible("training.batch_size", batch_size, mesh)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return mesh


def check_population_keys(config: DictConfig) -> None:
    """Refuses, by name, the keys a population cannot honour (checked before a sweep starts).

    `callbacks.checkpoint` is not refused: a sweep writes no checkpoints, but its best.yaml
    carries the keys to the `fdl train` that retrains the best point.

    An `objective:` section is honoured: every member minimizes it, as `fdl train` does.

    `training.devices: D` is honoured: each member's batches are split over D devices
    (`build_population_mesh`), the members over the rest.

    Raises:
      ConfigError: `training.fused: false`, `training.shard_params`, `training.model_axis`,
        a `training.devices` that does not divide the devices (or the batch), or a `sample:` section.
    """
    if config.training.get("precision", "float32") != "float32":
        raise ConfigError(f"training.precision: {config.training.precision} — a population trains in float32; "
                          "remove the key (and set it on the `fdl train` of the best point)")
    for key in ("shard_params", "model_axis"):
        if config.training.get(key) is not None:
            raise ConfigError(f"training.{key}: a sweep splits its members over the devices itself — remove "
                              "the key (and set it on the `fdl train` of the best point)")
    build_population_mesh(config.training.get("devices"))  # the batch size may be swept: checked per group
    if not config.training.fused:
        raise ConfigError("training.fused: false — a population always trains its members in one "
                          "fused program per epoch (the numbers are the same); remove the key")
    if config.get("sample") is not None:
        raise ConfigError("sample: a sweep writes no samples — remove the section from the sweep "
                          "(its best.yaml gets it back for the `fdl train` of the best point)")


@dataclasses.dataclass(frozen=True)
class RunArguments:
    """What a run config builds, built once: the data, model, loss, optimizer and the callbacks.

    Attributes:
      config: the loaded config it was built from.
      data: the prepared dataset and its fitted preprocessing.
      model, loss, augment: the built objects (`fdl.fit`'s arguments of those names).
      optimizer: `fdl.optim.make_optimizer` keyword arguments.
      objective: the `objective:` section's objective (fdl.objectives), or None: then
        the batch mean of `loss` on (x, y) is minimized.
    """

    config: DictConfig
    data: PreparedData
    model: nn.Layer
    loss: object
    augment: object
    optimizer: dict
    objective: object = None

    def callbacks(self) -> list:
        """Fresh callbacks as `callbacks:` asks: EarlyStopping, ReduceLROnPlateau and the `custom`
        ones by import path (a new set on every call: one per population member)."""
        section, built = self.config.callbacks, []
        stop = section.early_stopping
        if stop.enabled:
            built.append(cb.EarlyStopping(stop.monitor, patience=stop.patience, mode=stop.mode,
                                          min_delta=stop.min_delta, restore_best=stop.restore_best))
        plateau = section.reduce_lr_on_plateau
        if plateau.enabled:
            built.append(cb.ReduceLROnPlateau(plateau.monitor, factor=plateau.factor,
                                              patience=plateau.patience, mode=plateau.mode,
                                              min_delta=plateau.min_delta, cooldown=plateau.cooldown,
                                              min_learning_rate=plateau.min_learning_rate))
        return built + build_custom_callbacks(self.config)

    def fit_arguments(self) -> dict:
        """`fdl.fit` keyword arguments: every key of `training:` and the config's callbacks."""
        training = self.config.training
        _check_count("training.batch_size", training.batch_size, maximum=self.data.dataset.train.num_examples)
        minimized = {"objective": self.objective} if self.objective is not None else {"loss": self.loss}
        return dict(**minimized, optimizer=build_optimizer(self.config.optimizer),
                    epochs=training.epochs, batch_size=training.batch_size, metrics=list(self.config.metrics),
                    callbacks=self.callbacks(), seed=self.config.seed, augment=self.augment,
                    input_shape=as_shape(self.data.dataset.feature_shape),  # what a dict batch does not show
                    fused=training.fused, eval_batch_size=training.eval_batch_size, verbose=training.verbose,
                    mesh=build_mesh(training.devices, training.shard_params, training.model_axis), shard_params=training.shard_params,
                    precision=build_precision(training.precision))

    def population_arguments(self) -> dict:
        """`fdl.population.train_population` keyword arguments (members apart) for the same run.

        Raises:
          ConfigError: naming a key a population cannot honour.
        """
        check_population_keys(self.config)
        training = self.config.training
        minimized = {"objective": self.objective} if self.objective is not None else {"loss": self.loss}
        return dict(**minimized, optimizer=self.optimizer, epochs=training.epochs,
                    batch_size=training.batch_size, metrics=list(self.config.metrics),
                    callbacks=self.callbacks, augment=self.augment,
                    input_shape=as_shape(self.data.dataset.feature_shape),  # what a dict batch does not show
                    eval_batch_size=training.eval_batch_size, verbose=training.verbose,
                    mesh=build_population_mesh(training.devices, training.batch_size))


# The counts of a config and their smallest values, checked at load (before any training) so that
# the error names the key, not the fdl.fit or callback argument it becomes.
COUNTS = {"seed": 0, "training.epochs": 1, "training.batch_size": 1, "training.eval_batch_size": 1,
          "callbacks.checkpoint.every": 1, "callbacks.checkpoint.every_steps": 1, "callbacks.checkpoint.keep": 1,
          "callbacks.early_stopping.patience": 0, "callbacks.reduce_lr_on_plateau.patience": 0,
          "callbacks.reduce_lr_on_plateau.cooldown": 0}
VERBOSITY = (0, 1, 2)


def _check_count(key: str, value, minimum: int = 1, maximum: int | None = None) -> None:
    try:
        check_positive_int(key, value, minimum, maximum)
    except ValueError as error:
        raise ConfigError(str(error).replace(f" — pass {key}=", f" — set {key}=")) from None


def check_counts(config: DictConfig) -> None:
    """One-line errors, naming the key, for a count out of range (`COUNTS`) or an unknown `training.verbose`.

    Raises:
      ConfigError: e.g. "training.epochs must be an int >= 1, got 0 — set training.epochs=1".
    """
    for key, minimum in COUNTS.items():
        value = OmegaConf.select(config, key)
        if value is not None or key == "seed":
            _check_count(key, value, minimum)
    if config.training.verbose not in VERBOSITY:
        raise ConfigError(f"training.verbose: expected 0 (quiet), 1 (a progress bar) or 2 (a line per epoch), "
                          f"got {config.training.verbose!r}")


def build_arguments(config: DictConfig, data: PreparedData | None = None) -> RunArguments:
    """Builds everything `config` describes, checked against each other once.

    Args:
      config: a loaded config (`fdl.config.load_config`).
      data: the prepared data when the caller already has it (a sweep shares it
        between groups); else it is built from `config.data` and `config.seed`.

    Raises:
      ConfigError: a section that cannot be built, or a model that does not take
        the data's examples (one line, key path).
    """
    check_counts(config)
    data = data if data is not None else build_data(config.data, config.seed)
    model = build_model(config.model)
    check_model_fits_data(model, data.dataset.feature_shape)
    check_objective_fits_data(config, data.dataset)
    _check_metrics(config)
    build_optimizer(config.optimizer)  # a bad optimizer section fails here, before any training
    return RunArguments(config=config, data=data, model=model, loss=build_loss(config.loss),
                        augment=build_augment(config.data), optimizer=optimizer_arguments(config.optimizer),
                        objective=build_objective(config.get("objective")))
