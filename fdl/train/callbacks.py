"""Callbacks: host-side hooks `fit` calls between compiled epochs.

A callback sees a `Run` — the model, the current `TrainState`, the history —
and may replace `run.state` (restore the best weights, lower the learning
rate) or set `run.stop_training`. A plain callable `fn(epoch, logs)` is
accepted too. Epochs are counted from 1 in logs, as Keras does.

What a callback carries from epoch to epoch (a best value, a patience
counter, a best state) is its `state_dict()`; `ModelCheckpoint` saves every
callback's with the run and gives it back through `load_state_dict` on
resume, so a resumed run continues exactly as the uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fdl.io import append_jsonl
from fdl.optim import get_hyperparameter, set_hyperparameter
from fdl.train.checkpoint import RunCheckpoints
from fdl.train.epoch import EpochProgress
from fdl.train.checks import check_positive_int


# One compiled program copies a whole state: leaf by leaf, each copy was its own dispatch (~20
# for an MLP with Adam, ~0.35 ms every time a best state is kept).
_copy_tree = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))

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
    epoch: int = 0  # epochs completed (a resumed run starts from its checkpoint's)
    callbacks: list = dataclasses.field(default_factory=list)  # every callback of the run, in order
    # The epoch in progress (fdl.train.epoch.EpochProgress) when callbacks act mid-epoch
    # (`on_chunk_end`), or the part-done epoch a checkpoint resumes; None at an epoch's end.
    progress: Any = None
    # () -> the EpochProgress's shapes (jax.ShapeDtypeStruct), to read a mid-epoch checkpoint into
    progress_shapes: Callable[[], Any] | None = None

    def hyperparameter(self, name: str) -> float:
        """The current value of an injected optimizer hyperparameter, e.g. "learning_rate"."""
        return float(get_hyperparameter(self.state.opt_state, name))

    def set_hyperparameter(self, name: str, value: float) -> None:
        """Sets an injected optimizer hyperparameter from the next epoch on (recompiles nothing)."""
        self.state = self.state.replace(opt_state=set_hyperparameter(self.state.opt_state, name, value))

    def snapshot(self) -> Any:
        """A copy of the current state to `restore` later (fit donates states to later epochs)."""
        return _copy_tree(self.state)

    def restore(self, snapshot: Any) -> None:
        """Makes a snapshot the run's state again."""
        self.state = snapshot


class Callback:
    """Base class: override any of the three hooks, and `state_dict`/`load_state_dict` if the
    callback carries something from epoch to epoch."""

    saves_run = False  # ModelCheckpoint: begins first (it may restore the run) and ends each epoch last
    every_steps: int | None = None  # steps between this callback's `on_chunk_end` calls (None: never)

    def state_dict(self) -> dict:
        """What this callback carries across epochs: JSON-able values, and under "snapshot" an
        optional copy of a TrainState (e.g. the best epoch's); saved with every checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Takes back what `state_dict` returned (its "snapshot" restored as a TrainState)."""

    def on_train_begin(self, run: Run) -> None:
        pass

    def on_epoch_end(self, run: Run, epoch: int, logs: dict) -> None:
        pass

    def on_chunk_end(self, run: Run) -> None:
        """Inside an epoch, after every chunk of steps (fit cuts epochs into chunks of the gcd of
        the callbacks' `every_steps`); `run.progress` holds the epoch so far, finite."""

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

    def state_dict(self) -> dict:
        return {"best": None if math.isinf(self.best) else self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = (math.inf if self.mode == "min" else -math.inf) if state["best"] is None else state["best"]

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

    def state_dict(self):
        return {**self.tracker.state_dict(), "wait": self.wait, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "snapshot": self.best_state}

    def load_state_dict(self, state):
        self.tracker.load_state_dict(state)
        self.wait, self.best_epoch, self.stopped_epoch = state["wait"], state["best_epoch"], state["stopped_epoch"]
        self.best_state = state.get("snapshot")


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

    def state_dict(self):
        return {**self.tracker.state_dict(), "wait": self.wait, "cooling": self.cooling}

    def load_state_dict(self, state):
        self.tracker.load_state_dict(state)
        self.wait, self.cooling = state["wait"], state["cooling"]


class ModelCheckpoint(Callback):
    """Checkpoints the whole run into `directory` and resumes from it.

    A checkpoint (`<directory>/<step>/`, orbax, see
    `fdl.train.checkpoint.RunCheckpoints`) holds everything the run depends
    on: the TrainState (params, model and optimizer state, step, RNG key), the
    epochs done and the history, every callback's `state_dict`
    (EarlyStopping's counters and best state, ReduceLROnPlateau's, this
    one's best value), the `metadata` given, and — item "best" — the best
    state by `monitor` so far, which every checkpoint carries, so `keep`
    never deletes it. The arrays are copied to the host and written in the
    background: training does not wait for the disk, and every checkpoint is
    complete when fit returns.

    With `resume=True`, training continues from the directory's newest good
    checkpoint (a damaged one is skipped with a warning) exactly as if it had
    never stopped: the same batches and keys follow, callbacks decide as
    they would have, and the history — so metrics.jsonl and TensorBoard,
    which write it — has every epoch once.

    Example:
      >>> state, history = fdl.fit(model, train, val, epochs=2, callbacks=[ModelCheckpoint("ckpt")])
      >>> checkpoints = fdl.train.RunCheckpoints("ckpt")
      >>> step, items, metadata = checkpoints.newest({"state": state, "best": state})
      >>> step, metadata["epoch"], sorted(items)
      (..., 2, ['best', 'state'])

    Args:
      directory: the checkpoints' folder (or a RunCheckpoints over it).
      monitor, mode: the logged quantity that decides the best state (see
        EarlyStopping); None keeps no best state.
      every: epochs between checkpoints; the last epoch is always saved.
      every_steps: also checkpoint inside each epoch, after every this many of
        its steps (Keras' `save_freq=N`): fit then runs the epoch in chunks of
        N steps, with the numbers of a whole epoch, and a resumed run continues
        mid-epoch from the exact batch (with the epoch's logs and metrics so far).
      every_seconds: also wait at least this long after the previous
        checkpoint (a kill then loses at most that much training); None: no wait.
      keep: the number of newest checkpoints kept (older ones are deleted).
      resume: continue from the newest checkpoint in `directory`; without it a
        directory that holds checkpoints is refused.
      metadata: JSON-able values saved with every checkpoint; on resume the
        checkpoint's must be equal (e.g. a fingerprint of the config).
    """

    saves_run = True

    def __init__(self, directory, *, monitor: str | None = "val_loss", mode: str = "auto", every: int = 1,
                 every_steps: int | None = None, every_seconds: float | None = None, keep: int = 2,
                 resume: bool = False, metadata: dict | None = None):
        self.checkpoints = directory if isinstance(directory, RunCheckpoints) else None
        self._owns_checkpoints = self.checkpoints is None
        self.directory = self.checkpoints.folder if self.checkpoints is not None else directory
        self.every = check_positive_int("ModelCheckpoint: every", every)
        self.every_steps = None if every_steps is None else check_positive_int("ModelCheckpoint: every_steps",
                                                                              every_steps)
        self.keep = check_positive_int("ModelCheckpoint: keep", keep)
        self.every_seconds, self.resume, self.metadata = every_seconds, resume, dict(metadata or {})
        self.tracker = Monitor("ModelCheckpoint", monitor, mode) if monitor is not None else None
        self.best_state = self.best_epoch = None
        self.saved_at = None       # (step, time) of the last checkpoint queued
        self.resumed_step = None   # the step of the checkpoint the run resumed from

    def on_train_begin(self, run):
        if self.checkpoints is None:
            self.checkpoints = RunCheckpoints(self.directory, keep=self.keep)
        held = self.checkpoints.steps()
        if held and not self.resume:
            raise ValueError(f"ModelCheckpoint: {os.fspath(self.directory)!r} already holds checkpoints — "
                             "pass resume=True to continue them, or choose another directory")
        if not held:  # a fresh run: nothing to read, so no epoch to trace for its shapes
            return
        shapes = run.progress_shapes()
        targets = {"state": run.state, "best": run.state,
                   "progress": jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _part_done(shapes)),
                   **{f"callback_{index}": run.state for index in range(len(run.callbacks))}}
        found = self.checkpoints.newest(targets)
        if found is not None:
            self._restore(run, *found)

    def _restore(self, run, step: int, items: dict, metadata: dict) -> None:
        where = f"ModelCheckpoint: {os.fspath(self.directory)!r}"
        for key, value in self.metadata.items():
            if metadata["run"].get(key) != value:
                raise ValueError(f"{where} was written with {key}={metadata['run'].get(key)!r}, this run has "
                                 f"{value!r} — resume with the settings it was written with, or start anew")
        saved = metadata["callbacks"]
        names = [type(callback).__name__ for callback in run.callbacks]
        if [name for name, _ in saved] != names:
            raise ValueError(f"{where} was written with the callbacks {[name for name, _ in saved]}, this run "
                             f"has {names} — resume with the callbacks it was written with")
        for index, (callback, (_, state)) in enumerate(zip(run.callbacks, saved)):
            if f"callback_{index}" in items:
                state = {**state, "snapshot": items[f"callback_{index}"]}
            callback.load_state_dict(state)
        run.state, run.epoch = items["state"], metadata["epoch"]
        if "progress" in items:  # saved mid-epoch
            run.progress = EpochProgress(state=items["state"], **items["progress"])
        run.history[:] = metadata["history"]
        self.best_state = items.get("best")
        self.saved_at, self.resumed_step = (step, time.perf_counter()), step

    def state_dict(self):
        return {} if self.tracker is None else {**self.tracker.state_dict(), "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        if self.tracker is not None:
            self.tracker.load_state_dict(state)
            self.best_epoch = state["best_epoch"]

    def _waited(self) -> bool:
        """Whether `every_seconds` have passed since the last checkpoint."""
        return (self.every_seconds is None or self.saved_at is None
                or time.perf_counter() - self.saved_at[1] >= self.every_seconds)

    def on_epoch_end(self, run, epoch, logs):
        if self.tracker is not None and self.tracker.improved(self.tracker.value(logs)):
            self.best_state, self.best_epoch = run.snapshot(), epoch
        if epoch % self.every == 0 and self._waited():
            self.save(run)

    def on_chunk_end(self, run):
        if self.every_steps is not None and int(run.progress.done) % self.every_steps == 0 and self._waited():
            self.save(run)

    def on_train_end(self, run):
        try:
            self.save(run)  # the last epoch (fit ends this callback first: before any restores a best state)
        finally:  # every checkpoint complete when fit returns
            if self._owns_checkpoints:
                self.checkpoints, checkpoints = None, self.checkpoints
                checkpoints.close()
            else:
                self.checkpoints.wait()

    def save(self, run) -> None:
        """Queues the checkpoint of the run as it is now, mid-epoch included (skipped if its step
        is saved already)."""
        state = run.state if run.progress is None else run.progress.state
        step = int(state.step)
        if self.saved_at is not None and self.saved_at[0] == step:
            return
        items, callbacks = {"state": state}, []
        if run.progress is not None:
            items["progress"] = _part_done(run.progress)
        if self.best_state is not None:
            items["best"] = self.best_state
        for index, callback in enumerate(run.callbacks):
            state = dict(callback.state_dict())
            snapshot = state.pop("snapshot", None)
            if snapshot is not None:
                items[f"callback_{index}"] = snapshot
            callbacks.append([type(callback).__name__, state])
        done = 0 if run.progress is None else int(run.progress.done)  # steps of the epoch after `epoch`
        self.checkpoints.save(step, items, {"epoch": run.epoch, "done": done, "step": step,
                                            "history": list(run.history), "callbacks": callbacks,
                                            "run": self.metadata})
        self.saved_at = (step, time.perf_counter())


def _part_done(progress) -> dict:
    """What a mid-epoch checkpoint keeps of an EpochProgress beside its state (item "state")."""
    return {"logs": progress.logs, "metrics": progress.metrics, "done": progress.done}


class HistoryLogger(Callback):
    """Appends each epoch's logs as one JSON object per line to `path` (flushed per epoch)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def on_train_begin(self, run):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def on_epoch_end(self, run, epoch, logs):
        append_jsonl(self.path, logs)  # drops a line a killed writer cut short


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
