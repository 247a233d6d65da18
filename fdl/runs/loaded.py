"""`load_run`: a finished run directory as an object, in a notebook or behind `fdl eval`/`fdl predict`.

    >>> config = fdl.config.load_config("configs/mnist1d_logreg.yaml", ["training.epochs=2"])
    >>> result = fdl.runs.train_from_config(config)   # writes runs/mnist1d_logreg-<time>/
    >>> run = fdl.load_run(result.run_dir)            # or a path: "runs/mnist1d_logreg-20261125-101500"
    >>> run.evaluate("test")                          # the config's loss and metrics
    {'loss': ..., 'accuracy': ..., 'f1': ...}
    >>> logits = run.predict(x)                       # raw inputs: the run's preprocessing is applied
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from fdl.config import ConfigError, RunArguments, build_arguments, load_config
from fdl.data import MinMaxStats, StandardizeStats, transform
from fdl.optim import make_optimizer
from fdl.records import RunDir
from fdl.runs.train import evaluate_split, split_evaluator
from fdl.train import Evaluator, TrainState, init_train_state, load_checkpoint

__all__ = ["LoadedRun", "load_run"]

STATS = {"standardize": StandardizeStats, "min_max": MinMaxStats}


@dataclasses.dataclass
class LoadedRun:
    """A run directory read back: its config, built model and data, a checkpoint's state.

    Attributes:
      run_dir: the RunDir.
      arguments: the config built once (`arguments.config`, `.model`, `.data`).
      state: the TrainState of the loaded checkpoint.
      checkpoint: which one was loaded ("best" or "last").
    """

    run_dir: RunDir
    arguments: RunArguments
    state: TrainState
    checkpoint: str
    _evaluator: Evaluator | None = dataclasses.field(default=None, repr=False)

    @property
    def config(self):
        return self.arguments.config

    @property
    def model(self):
        return self.arguments.model

    @property
    def evaluator(self) -> Evaluator:
        """The run's compiled evaluation and prediction programs, built on first use and kept."""
        if self._evaluator is None:
            self._evaluator = split_evaluator(self.arguments)
        return self._evaluator

    def evaluate(self, split: str = "test") -> dict:
        """Loss and the config's metrics of the loaded state on one of the run's data splits."""
        splits = self.arguments.data.dataset.splits()
        if split not in splits:
            raise ValueError(f"split {split!r}: this run's data has no {split} split — available: "
                             f"{', '.join(splits)}")
        return evaluate_split(self.evaluator, self.state, splits[split])

    def preprocess(self, x) -> np.ndarray:
        """Raw inputs as the model saw them in training: the run's fitted preprocessing applied."""
        x = np.asarray(x, np.float32)
        saved = self.run_dir.preprocess()
        if saved is None:
            return x
        method, stats = saved
        return transform(method, STATS[method](**stats), x)

    def predict(self, x) -> np.ndarray:
        """Model outputs (logits for classifiers) for raw inputs x: (n, *input_shape), eval mode."""
        x = np.asarray(x)
        input_shape = tuple(self.arguments.data.dataset.feature_shape)
        if x.ndim == 0 or x.shape[1:] != input_shape:
            single = " (one example? add a leading axis: x[None])" if x.shape == input_shape else ""
            raise ValueError(f"x: shape {x.shape}, the model expects (n, {', '.join(map(str, input_shape))})"
                             f"{single}")
        if x.shape[0] == 0:
            raise ValueError("x: no examples (shape (0, ...)) — give at least one row")
        return self.evaluator.predict(self.state.params, self.state.model_state, self.preprocess(x))


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best") -> LoadedRun:
    """Reads a run directory written by `fdl train`: config, model, data and a checkpoint.

    Args:
      run_dir: the run directory.
      checkpoint: "best" (falls back to "last" when the run kept no best) or "last".

    Raises:
      ConfigError: not a run directory, an unknown checkpoint name, or no checkpoint.
    """
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint: expected 'best' or 'last', got {checkpoint!r}")
    try:
        run_dir = RunDir.existing(run_dir)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    arguments = build_arguments(load_config(run_dir.config_path))
    template = init_train_state(arguments.model, arguments.data.dataset.feature_shape,
                                make_optimizer(**arguments.optimizer), arguments.config.seed)
    if not run_dir.checkpoint(checkpoint).is_file():
        checkpoint = "last"
    if not run_dir.checkpoint(checkpoint).is_file():
        raise ConfigError(f"{str(run_dir.path)!r}: no checkpoint to load — the run ended before its "
                          "first epoch finished")
    state, _ = load_checkpoint(run_dir.checkpoint(checkpoint), template)
    return LoadedRun(run_dir, arguments, jax.device_put(state), checkpoint)
