"""Callbacks: host-side hooks `fit` calls between compiled epochs.

A callback sees a `Run` — the model, the current `TrainState`, the history —
and may replace `run.state` (restore the best weights, lower the learning
rate) or set `run.stop_training`. A plain callable `fn(epoch, logs)` is
accepted too. Epochs are counted from 1 in logs, as Keras does.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable

import jax

from fdl.io import to_python
from fdl.optim import get_hyperparameter, set_hyperparameter
from fdl.train.checkpoint import CheckpointWriter
from fdl.train.checks import check_positive_int


__all__ = [
    "Run", "Callback", "LambdaCallback", "as_callback", "Monitor", "EarlyStopping",
    "ReduceLROnPlateau", "ModelCheckpoint", "HistoryLogger", "ProgressBar", "format_logs",
]


@dataclasses.dataclass
class Run:
    """What callbacks see and may change during `fit`.

    Callbacks change training only through `stop_training` and the methods
    below, so the same callback objects also drive each member of a population
    (fdl.population gives every member its own callbacks and a run with these
    methods over its slice of the stacked state).
    """

    model: Any
    state: Any
    epochs: int
    steps_per_epoch: int
    history: list = dataclasses.field(default_factory=list)
    stop_training: bool = False

    def hyperparameter(self, name: str) -> float:
        """The current value of an injected optimizer hyperparameter, e.g. "learning_rate"."""
        return float(get_hyperparameter(self.state.opt_state, name))

    def set_hyperparameter(self, name: str, value: float) -> None:
        """Sets an injected optimizer hyperparameter from the next epoch on (recompiles nothing)."""
        self.state = self.state.replace(opt_state=set_hyperparameter(self.state.opt_state, name, value))

    def snapshot(self) -> Any:
        """A copy of the current state to `restore` later (fit donates states to later epochs)."""
        return jax.tree.map(lambda a: a.copy(), self.state)

    def restore(self, snapshot: Any) -> None:
        """Makes a snapshot the run's state again."""
        self.state = snapshot


class Callback:
    """Base class: override any of the three hooks."""

    def on_train_begin(self, run: Run) -> None:
        pass

    def on_epoch_end(self, run: Run, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self, run: Run) -> None:
        pass


class LambdaCallback(Callback):
    """Wraps a plain `fn(epoch, logs)` called after every epoch."""

    def __init__(self, fn: Callable[[int, dict], Any]):
        self.fn = fn

    def on_epoch_end(self, run, epoch, logs):
        self.fn(epoch, logs)


def as_callback(callback) -> Callback:
    if isinstance(callback, Callback):
        return callback
    if callable(callback):
        return LambdaCallback(callback)
    raise TypeError(f"callbacks: expected a Callback or a callable fn(epoch, logs), got "
                    f"{type(callback).__name__}")


class Monitor:
    """Tracks the best value of one logged quantity."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float = 0.0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "min" if "loss" in monitor or monitor.endswith(("mse", "mae")) else "max"
        self.owner, self.monitor, self.mode, self.min_delta = owner, monitor, mode, abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def value(self, logs: dict) -> float:
        if self.monitor not in logs:
            raise KeyError(f"{self.owner}: monitor {self.monitor!r} is not logged — logged: "
                           f"{', '.join(sorted(k for k in logs if not isinstance(logs[k], list)))}")
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        better = (value < self.best - self.min_delta if self.mode == "min"
                  else value > self.best + self.min_delta)
        if better:
            self.best = value
        return better


class EarlyStopping(Callback):
    """Stops when `monitor` has not improved for `patience` epochs.

    Args:
      monitor: a logged key, e.g. "val_loss" or "val_accuracy".
      patience: epochs without improvement before stopping.
      mode: "min", "max" or "auto" (min for losses/errors, max otherwise).
      min_delta: the smallest change that counts as an improvement.
      restore_best: at the end, put back the state of the best epoch.
    """

    def __init__(self, monitor: str = "val_loss", *, patience: int = 5, mode: str = "auto",
                 min_delta: float = 0.0, restore_best: bool = True):
        self.tracker = Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience, self.restore_best = patience, restore_best
        self.wait, self.best_state, self.best_epoch, self.stopped_epoch = 0, None, None, None

    def on_epoch_end(self, run, epoch, logs):
        if self.tracker.improved(self.tracker.value(logs)):
            self.wait, self.best_epoch = 0, epoch
            if self.restore_best:
                self.best_state = run.snapshot()
            return
        self.wait += 1
        if self.wait >= self.patience:
            run.stop_training, self.stopped_epoch = True, epoch

    def on_train_end(self, run):
        if self.restore_best and self.best_state is not None:
            run.restore(self.best_state)


class ReduceLROnPlateau(Callback):
    """Multiplies the injected learning rate by `factor` after `patience` flat epochs.

    Works on optimizers from fdl.optim.make_optimizer (the learning rate is an
    array in the optimizer state, so lowering it recompiles nothing).
    """

    def __init__(self, monitor: str = "val_loss", *, factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 0.0, min_learning_rate: float = 0.0,
                 cooldown: int = 0):
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        self.tracker = Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.factor, self.patience, self.min_learning_rate = factor, patience, min_learning_rate
        self.cooldown, self.wait, self.cooling = cooldown, 0, 0

    def on_epoch_end(self, run, epoch, logs):
        if self.tracker.improved(self.tracker.value(logs)):
            self.wait = 0
            return
        if self.cooling > 0:
            self.cooling -= 1
            return
        self.wait += 1
        if self.wait >= self.patience:
            run.set_hyperparameter("learning_rate",
                                   max(run.hyperparameter("learning_rate") * self.factor, self.min_learning_rate))
            self.wait, self.cooling = 0, self.cooldown


class ModelCheckpoint(Callback):
    """Writes the state to `last` every `every` epochs (and when training ends) and to `best`
    when `monitor` improves.

    Files are written atomically (fdl.train.checkpoint) by a background writer
    (`CheckpointWriter`: training does not wait for the disk; both files are
    complete and final when fit returns); the metadata holds the epoch and its logs. Load with `fdl.load_checkpoint(path, target)`.

    Example:
      >>> state, history = fdl.fit(model, train, val, epochs=2,
      ...                          callbacks=[ModelCheckpoint(best="ckpt/best.ckpt", last="ckpt/last.ckpt")])
      >>> state, metadata = fdl.load_checkpoint("ckpt/last.ckpt", state)
      >>> metadata["epoch"], sorted(metadata["logs"])
      (2, ['epoch', 'learning_rate', 'loss', 'step', 'steps_per_s', 'time_s', 'val_loss'])

    Args:
      best: the path of the best checkpoint, or None for none.
      last: the path of the last epoch's checkpoint, or None for none.
      monitor, mode: the logged quantity that decides "best" (see EarlyStopping).
      every: epochs between writes of `last` (a resumed run repeats at most
        `every - 1` epochs); the final epoch is always written.
    """

    def __init__(self, *, best: str | os.PathLike | None = None, last: str | os.PathLike | None = None,
                 monitor: str = "val_loss", mode: str = "auto", every: int = 1):
        if best is None and last is None:
            raise ValueError("ModelCheckpoint: give best=PATH, last=PATH or both")
        self.best, self.last, self.every = best, last, check_positive_int("ModelCheckpoint: every", every)
        self.tracker = Monitor("ModelCheckpoint", monitor, mode) if best is not None else None
        self._unsaved = None  # (state, metadata) of an epoch `last` has not been written for
        self._writer = CheckpointWriter()

    def on_epoch_end(self, run, epoch, logs):
        metadata = {"epoch": epoch, "logs": logs}
        if self.last is not None:
            self._unsaved = (run.state, metadata)
            if epoch % self.every == 0:
                self._write_last()
        if self.tracker is not None and self.tracker.improved(self.tracker.value(logs)):
            self._writer.submit(self.best, run.state, metadata)

    def on_train_end(self, run):
        self._write_last()
        self._writer.close()  # every file written when fit returns

    def _write_last(self):
        if self._unsaved is not None:
            self._writer.submit(self.last, *self._unsaved)
            self._unsaved = None


class HistoryLogger(Callback):
    """Appends each epoch's logs as one JSON object per line to `path` (flushed per epoch)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def on_train_begin(self, run):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def on_epoch_end(self, run, epoch, logs):
        with open(self.path, "a") as file:
            file.write(json.dumps(to_python(logs)) + "\n")


class ProgressBar(Callback):
    """A rich progress bar with epoch, loss, metrics and steps/s.

    Quiet when `verbose` is 0; when the output is not a terminal it prints one
    plain line per epoch only if `verbose` is 2.
    """

    def __init__(self, verbose: int = 1, stream=None):
        self.verbose, self.stream = verbose, stream or sys.stderr
        self.progress = self.task = None

    def on_train_begin(self, run):
        if self.verbose and self.stream.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self.progress = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[logs]}"),
                                     transient=False)
            self.progress.start()
            self.task = self.progress.add_task("fit", total=run.epochs, logs="")
        self.start = time.perf_counter()

    def on_epoch_end(self, run, epoch, logs):
        text = format_logs(logs)
        if self.progress is not None:
            self.progress.update(self.task, completed=epoch, logs=text)
        elif self.verbose >= 2:
            print(f"epoch {epoch}/{run.epochs}  {text}", file=self.stream, flush=True)

    def on_train_end(self, run):
        if self.progress is not None:
            self.progress.stop()


def format_logs(logs: dict) -> str:
    shown = []
    for key, value in logs.items():
        if key in ("epoch", "step") or isinstance(value, list) or hasattr(value, "shape") and value.shape:
            continue
        shown.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(shown)
