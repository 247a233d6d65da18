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
import functools
import os
from collections.abc import Mapping
from typing import NamedTuple

import jax
import numpy as np

from fdl.attribution import Explainer
from fdl.config import ConfigError, RunArguments, build_arguments, load_config
from fdl.data import MinMaxStats, StandardizeStats, transform
from fdl.data.preprocess import stats_from_arrays, stats_shapes
from fdl.optim import make_optimizer
from fdl.records import RunDir
from fdl.runs.train import evaluate_split, split_evaluator
from fdl.train import CheckpointError, Evaluator, RunCheckpoints, TrainState, init_train_state, load_checkpoint
from fdl.train.checks import check_data, host_examples

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
    _explainer: Explainer | None = dataclasses.field(default=None, repr=False)

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

    @property
    def explainer(self) -> Explainer:
        """The run's compiled attribution programs (`fdl.explain`): its model, fitted preprocessing
        and eval batch size; built on first use and kept, so a second explanation compiles nothing."""
        if self._explainer is None:
            preprocess = None if self.preprocessing is None else functools.partial(transform, *self.preprocessing)
            self._explainer = Explainer(self.model, preprocess=preprocess,
                                        batch_size=self.config.training.eval_batch_size)
        return self._explainer

    def evaluate(self, split: str = "test") -> dict:
        """Loss and the config's metrics of the loaded state on one of the run's data splits."""
        splits = self.arguments.data.dataset.splits()
        if split not in splits:
            raise ValueError(f"split {split!r}: this run's data has no {split} split — available: "
                             f"{', '.join(splits)}")
        return evaluate_split(self.evaluator, self.state, splits[split])

    @functools.cached_property
    def preprocessing(self) -> tuple[str, NamedTuple] | None:
        """(method, fitted statistics) the model was trained with, read from preprocess.npz on first use.

        None when the run's config sets no `data.preprocess`. When it sets one the
        file must hold that method's statistics, one value per input feature:
        predicting without them would give other outputs. A model's dict of inputs
        has a dict input name -> statistics (`fdl.data.preprocess.stats_arrays`).

        Raises:
          FileNotFoundError: the config sets data.preprocess and preprocess.npz is missing.
          ValueError: preprocess.npz is damaged, or holds other statistics than
            the config's method needs; the message names the file.
        """
        method = self.arguments.data.preprocess
        if method is None:
            return None
        path, saved = self.run_dir.preprocess_path, self.run_dir.preprocess()
        if saved is None:
            raise FileNotFoundError(f"{path}: missing, but the run's config sets data.preprocess: {method} "
                                    f"— {RunDir.RESTORE}")
        problem = _stats_problem(method, *saved, self.arguments.data.dataset.feature_shape)
        if problem is not None:
            raise ValueError(f"{path}: damaged ({problem}) — {RunDir.RESTORE}")
        return method, stats_from_arrays(STATS[method], saved[1])

    def preprocess(self, x):
        """Raw inputs as the model saw them in training: the run's fitted `preprocessing` applied
        (to each input of a dict of inputs)."""
        if isinstance(x, Mapping):
            x = {name: np.asarray(leaf, np.float32) for name, leaf in x.items()}
        else:
            x = np.asarray(x, np.float32)
        if self.preprocessing is None:
            return x
        return transform(*self.preprocessing, x)

    def require_one_input(self, command: str) -> tuple:
        """The model's per-example input shape; a one-line ValueError when it takes a dict of inputs,
        which `command` (e.g. "fdl serve") does not take yet."""
        shape = self.arguments.data.dataset.feature_shape
        if isinstance(shape, dict):
            raise ValueError(f"run {str(self.run_dir.path)!r}: its model takes a dict of inputs {list(shape)} — "
                             f"{command} takes models of one input array (fdl predict takes the dict)")
        return tuple(shape)

    def check_inputs(self, x):
        """`x` as an array, checked to be raw inputs for the model: (n, *input_shape) with n >= 1;
        for a model that takes a dict of inputs, a dict of such arrays with the run's keys
        (checked by `fdl.train.checks.check_data`, which names the key).

        Raises:
          ValueError: another shape (with a hint for a single example), no examples, or
            (a dict of inputs) a missing or extra key, one of another shape or length.
        """
        input_shape = self.arguments.data.dataset.feature_shape
        if isinstance(x, Mapping) or isinstance(input_shape, Mapping):
            x = host_examples(x)
            check_data("predict", self.model, x, expected_shape=input_shape, finite=False)
            return x
        x = np.asarray(x)
        input_shape = tuple(input_shape)
        if x.ndim == 0 or x.shape[1:] != input_shape:
            single = " (one example? add a leading axis: x[None])" if x.shape == input_shape else ""
            raise ValueError(f"x: shape {x.shape}, the model expects (n, {', '.join(map(str, input_shape))})"
                             f"{single}")
        if x.shape[0] == 0:
            raise ValueError("x: no examples (shape (0, ...)) — give at least one row")
        return x

    def predict(self, x) -> np.ndarray:
        """Model outputs (logits for classifiers) for raw inputs x: (n, *input_shape), eval mode
        (a dict input name -> such an array for a model that takes a dict of inputs).

        Raises:
          ValueError: x is not (n, *input_shape) (`check_inputs`), or preprocess.npz is damaged.
          FileNotFoundError: the run's config preprocesses and preprocess.npz is missing.
        """
        x = self.check_inputs(x)
        return self.evaluator.predict(self.state.params, self.state.model_state, self.preprocess(x))


def _stats_problem(method: str, saved_method: str, stats: dict, input_shape) -> str | None:
    """What keeps saved statistics from being `method`'s for inputs of `input_shape` (a dict of
    shapes for a dict of inputs), or None."""
    wanted = stats_shapes(STATS[method], input_shape)
    if saved_method != method or sorted(stats) != sorted(wanted):
        return (f"holds {saved_method} statistics {', '.join(sorted(stats)) or '(none)'}; the config's "
                f"{method} needs {', '.join(wanted)}")
    for name, shape in wanted.items():
        if stats[name].shape != shape:
            return f"{name} has shape {stats[name].shape}, the inputs {shape}"
    return None


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
    state, checkpoint = _checkpoint_state(run_dir, checkpoint, template)
    return LoadedRun(run_dir, arguments, jax.device_put(state), checkpoint)


def _checkpoint_state(run_dir: RunDir, name: str, template: TrainState) -> tuple[TrainState, str]:
    """(state, name loaded) of the run's newest good checkpoint: its "best" item or its state.

    "best" falls back to "last" when the run kept no best state. An fdl 0.1 run's
    checkpoints/{best,last}.ckpt files are read as they are.
    """
    legacy = [candidate for candidate in (name, "last") if run_dir.checkpoint(f"{candidate}.ckpt").is_file()]
    if legacy:
        return load_checkpoint(run_dir.checkpoint(f"{legacy[0]}.ckpt"), template)[0], legacy[0]
    found = None
    if run_dir.checkpoints_dir.is_dir():
        checkpoints = RunCheckpoints(run_dir.checkpoints_dir)
        try:
            found = checkpoints.newest({"state": template, "best": template})
        except CheckpointError as error:
            raise ConfigError(str(error)) from None
        finally:
            checkpoints.close()
    if found is None:
        raise ConfigError(f"{str(run_dir.path)!r}: no checkpoint to load — the run ended before its first "
                          "checkpoint was written")
    items = found[1]
    if name == "best" and "best" in items:
        return items["best"], "best"
    return items["state"], "last"
