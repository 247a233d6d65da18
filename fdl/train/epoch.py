"""Whole epochs: fused into one `lax.scan` on the device, or stepped from the host — and
epochs taken in parts (`EpochProgress`), so a long epoch can be checkpointed mid-way.

The data is any pytree of arrays with a shared leading example axis (`(x, y)`, a
dict, a bare `x`). Every path takes the batches in the order
`fdl.data.order.batch_indices` gives for (the run's data key, epoch) and drops
the last partial batch, so they see the same examples and give the same
parameters. A step is `step(state, batch) -> (state, logs)` (fdl.train.step);
an epoch returns the per-step logs, stacked, and the exact metrics of the
predictions the objective gave (`fdl.objectives.PREDICTIONS`).

Every path computes an epoch the same way: `begin_epoch` makes an
`EpochProgress` (the state, an empty buffer per log, each metric's
accumulator), `advance_epoch` takes steps — writing step i's logs into row i
and adding its predictions to the accumulators, step after step — and
`finish_epoch` reads the logs and computes the metrics. An epoch advanced in
chunks of any size therefore does the very same arithmetic in the same order
as one whole-epoch scan: XLA:CPU compiles the same step body the same way, and
the numbers are bit for bit those of the whole scan (tests/train/test_chunks.py).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdl.data.order import batch_indices
from fdl.metrics import Metric
from fdl.objectives import PREDICTIONS
from fdl.optim import current_learning_rate
from fdl.train.state import TrainState, data_key
from fdl.train.step import all_finite, guard

__all__ = [
    "num_examples", "take", "EpochProgress", "begin_epoch", "advance_epoch", "finish_epoch",
    "progress_is_finite", "make_train_epoch", "make_batches_epoch", "stage_epoch",
    "epoch_is_finite", "epoch_summary", "make_replay_epoch", "make_replay_batches", "StepEpoch",
    "host_batches", "HostEpoch", "replay_host_epoch",
]


def num_examples(data) -> int:
    """n, the length of the leading axis every leaf of `data` shares."""
    return jax.tree.leaves(data)[0].shape[0]


def take(data, rows):
    """The examples `rows` ((batch,) int) of every leaf: `jax.tree.map(lambda a: a[rows], data)`."""
    return jax.tree.map(lambda leaf: leaf[rows], data)


def _split_predictions(logs: dict):
    """(scalar logs, predictions or None): the engine's metrics read the predictions."""
    logs = dict(logs)
    return logs, logs.pop(PREDICTIONS, None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EpochProgress:
    """An epoch part-way through: what a mid-epoch checkpoint saves to resume it exactly.

    Attributes:
      state: the TrainState after `done` steps of the epoch.
      logs: name -> (num_batches,) per-step values; rows from `done` on are zeros.
      metrics: metric name -> its accumulator over the examples of steps < done.
      done: () int32, the steps of the epoch taken (the position in its batch order).
    """

    state: TrainState
    logs: dict
    metrics: dict
    done: jax.Array


def _no_predictions(metrics: Sequence[Metric]) -> ValueError:
    names = ", ".join(m.name for m in metrics)
    return ValueError(f"metrics [{names}]: the objective gives no predictions to measure — pass "
                      f"metrics=[] or return logs[{PREDICTIONS!r}] = (outputs, targets)")


def _init_metrics(metrics: Sequence[Metric], batch, num_batches: int) -> dict:
    """Each metric's empty accumulator for an epoch of `num_batches` batches like `batch`."""
    capacity = num_batches * num_examples(batch)
    return {m.name: m.init(capacity) for m in metrics}


def begin_epoch(step, metrics: Sequence[Metric], state: TrainState, batch, num_batches: int) -> EpochProgress:
    """The progress of an epoch of `num_batches` steps before its first step.

    `batch` (arrays or `jax.ShapeDtypeStruct`s) shows the shapes of a batch;
    the logs' shapes are read off the step's. Pure: call it inside a trace.
    """
    logs, _ = _split_predictions(jax.eval_shape(step, state, batch)[1])
    return EpochProgress(
        state=state, logs={name: jnp.zeros((num_batches, *s.shape), s.dtype) for name, s in logs.items()},
        metrics=_init_metrics(metrics, batch, num_batches), done=jnp.zeros((), jnp.int32))


def _taken(step, metrics: Sequence[Metric], state: TrainState, accumulators: dict, batch):
    """One step on `batch` and its predictions measured: (state, accumulators, scalar logs)."""
    state, logs = step(state, batch)
    logs, predictions = _split_predictions(logs)
    if metrics:
        if predictions is None:
            raise _no_predictions(metrics)
        outputs, targets = predictions
        mask = jnp.ones(outputs.shape[0], bool)
        accumulators = {m.name: m.update(accumulators[m.name], outputs, targets, mask) for m in metrics}
    return state, accumulators, logs


def _scan_steps(step, metrics: Sequence[Metric], state: TrainState, accumulators: dict, xs, batch_of):
    """One `lax.scan` step per leading row of `xs` (batch i is `batch_of(xs[i])`):
    (state, accumulators, logs name -> (steps,))."""

    def body(carry, item):
        state, accumulators, logs = _taken(step, metrics, *carry, batch_of(item))
        return (state, accumulators), logs

    (state, accumulators), logs = jax.lax.scan(body, (state, accumulators), xs)
    return state, accumulators, logs


def advance_epoch(step, metrics: Sequence[Metric], progress: EpochProgress, xs, batch_of=lambda batch: batch):
    """`progress` after one step per leading row of `xs`, as one `lax.scan`.

    Step i takes `batch_of(xs[i])`: xs the chunk's batches in place (every
    leaf (steps, batch_size, ...)), or its rows of the epoch's batch indices
    with `batch_of` gathering them.
    """
    state, accumulators, logs = _scan_steps(step, metrics, progress.state, progress.metrics, xs, batch_of)
    return EpochProgress(state=state, metrics=accumulators, done=progress.done + num_examples(xs),
                         logs={name: jax.lax.dynamic_update_slice(progress.logs[name], values, (progress.done,))
                               for name, values in logs.items()})


def _step_once(step, metrics: Sequence[Metric], progress: EpochProgress, batch) -> EpochProgress:
    """`progress` after one step on `batch` (the stepped paths' program)."""
    state, accumulators, logs = _taken(step, metrics, progress.state, progress.metrics, batch)
    return EpochProgress(state=state, metrics=accumulators, done=progress.done + 1,
                         logs={name: progress.logs[name].at[progress.done].set(value) for name, value in logs.items()})


def finish_epoch(metrics: Sequence[Metric], progress: EpochProgress):
    """(state, logs name -> (num_batches,), train_metrics name -> value) of a finished epoch."""
    return progress.state, progress.logs, {m.name: m.compute(progress.metrics[m.name]) for m in metrics}


def progress_is_finite(progress: EpochProgress) -> jax.Array:
    """() bool: every loss logged so far and every parameter is finite (what a checkpoint may keep)."""
    taken = jnp.arange(progress.logs["loss"].shape[0]) < progress.done
    return jnp.all(jnp.isfinite(progress.logs["loss"]) | ~taken) & all_finite(progress.state.params)


def _scan_epoch(step, metrics: Sequence[Metric], state: TrainState, xs, batch_of):
    """A whole epoch, one step per row of `xs`, as one program: (state, logs, train_metrics).

    The arithmetic of `begin_epoch`, `advance_epoch` over all of xs and
    `finish_epoch`, without tracing the step a second time for the logs' shapes.
    """
    first = batch_of(jax.tree.map(lambda leaf: leaf[0], xs))
    accumulators = _init_metrics(metrics, first, num_examples(xs))
    state, accumulators, logs = _scan_steps(step, metrics, state, accumulators, xs, batch_of)
    return state, logs, {m.name: m.compute(accumulators[m.name]) for m in metrics}


def make_train_epoch(step, batch_size: int, metrics: Sequence[Metric] = ()):
    """`train_epoch(state, data, indices) -> (state, logs, train_metrics)` as one `lax.scan`.

    The data (a pytree of device arrays with n examples) is uploaded once per
    run; step i gathers the examples `indices[i]` — indices (n // batch_size,
    batch_size) int32, the epoch's `fdl.data.batch_indices` (drawn on the host).
    A pure function of its arguments: jit it, or vmap it over a population.

    Returns:
      state: after `n // batch_size` steps.
      logs: name -> (n // batch_size,) per-step values ("loss" and the objective's).
      train_metrics: dict name -> value over the epoch's trained examples.
    """

    def train_epoch(state: TrainState, data, indices):
        return _scan_epoch(step, metrics, state, indices, lambda rows: take(data, rows))

    return train_epoch


def make_batches_epoch(step, metrics: Sequence[Metric] = ()):
    """`epoch(state, batches) -> (state, logs, train_metrics)`: one `lax.scan` over batches in place.

    `batches` is the epoch's batches already cut and stacked, every leaf
    (num_batches, batch_size, ...) — `stage_epoch` cuts them on the host in the
    shared epoch order — so the program gathers nothing (gathers are slow on
    XLA:CPU). Same step, same batches, same numbers as `make_train_epoch`.
    """
    return lambda state, batches: _scan_epoch(step, metrics, state, batches, lambda batch: batch)


def stage_epoch(data, rows: np.ndarray):
    """The epoch's batches cut on the host: every leaf `leaf[rows]`, (num_batches, batch_size, ...).

    data: a pytree of numpy arrays with n examples; rows: (num_batches,
    batch_size) indices of one epoch (`fdl.data.batch_indices`), or of a chunk of it.
    """
    return jax.tree.map(lambda leaf: leaf[rows], data)


def epoch_is_finite(state: TrainState, logs: dict) -> jax.Array:
    """() bool: every loss of the epoch and every parameter after it is finite."""
    return jnp.all(jnp.isfinite(logs["loss"])) & all_finite(state.params)


def epoch_summary(state: TrainState, logs: dict, train_metrics: dict) -> dict:
    """What `fit` logs after an epoch, computed on the device so one transfer brings it all.

    Returns:
      {"finite": () bool, "step": () int32, "loss": () mean loss, the mean of every
       other per-step log, "learning_rate": () (when the optimizer injects it),
       **train_metrics}.
    """
    summary = {"finite": epoch_is_finite(state, logs), "step": state.step,
               **{name: jnp.mean(values) for name, values in logs.items()}, **train_metrics}
    try:
        summary["learning_rate"] = current_learning_rate(state.opt_state)
    except ValueError:  # a plain optax optimizer without injected hyperparameters
        pass
    return summary


def _replay_scan(step, state: TrainState, xs, batch_of):
    """`make_replay_epoch`'s scan: (last finite state, first failed step or -1)."""
    guarded = guard(step)

    def body(carry, item):
        state, halted = carry
        state, _, now_halted = guarded(state, batch_of(item), halted)
        return (state, now_halted), now_halted & ~halted

    (state, halted), failed_here = jax.lax.scan(body, (state, jnp.zeros((), bool)), xs)
    return state, jnp.where(halted, jnp.argmax(failed_here), -1)


def make_replay_epoch(step):
    """`replay(state, data, indices) -> (last finite state, first failed step or -1)`.

    Re-runs an epoch that went wrong under `guard`, from the state it started
    from (or from a state part-way, over the rest of its indices), to find the
    step that produced a non-finite loss or params.
    """

    def replay(state: TrainState, data, indices):
        return _replay_scan(step, state, indices, lambda rows: take(data, rows))

    return replay


def make_replay_batches(step):
    """`make_replay_epoch` over batches in place: `replay(state, batches) -> (state, failed step or -1)`."""
    return lambda state, batches: _replay_scan(step, state, batches, lambda batch: batch)


class _Stepped:
    """An epoch stepped from the host, one compiled call per step, in parts or whole.

    The progress stays on the device and is donated to every step, so a step
    costs one dispatch and no allocation; `begin` copies the state first, so
    the caller's starting state survives.
    """

    def __init__(self, metrics: Sequence[Metric]):
        self._finish = jax.jit(lambda progress: finish_epoch(metrics, progress))

    def finish(self, progress: EpochProgress):
        """(state, logs name -> (num_batches,), train_metrics) of the finished epoch."""
        return self._finish(progress)


class StepEpoch(_Stepped):
    """The per-step path over data on the device: each call gathers its own batch.

    `epoch(state, data, indices) -> (state, logs, train_metrics)` runs a whole
    epoch; `begin`, `advance` and `finish` take it in parts. The same batches,
    step and metrics as the fused epoch.
    """

    def __init__(self, step, metrics: Sequence[Metric] = ()):
        super().__init__(metrics)
        self._begin = jax.jit(lambda state, data, indices: begin_epoch(
            step, metrics, jax.tree.map(jnp.copy, state), take(data, indices[0]), indices.shape[0]))
        self._one = jax.jit(lambda progress, data, indices: _step_once(
            step, metrics, progress, take(data, indices[progress.done])), donate_argnums=0)

    def begin(self, state: TrainState, data, indices) -> EpochProgress:
        """The progress before the first step of the epoch whose batches are `indices` (num_batches, batch_size)."""
        return self._begin(state, data, indices)

    def advance(self, progress: EpochProgress, data, indices, steps: int) -> EpochProgress:
        """`progress` after `steps` more steps of the epoch whose batches are `indices`."""
        for _ in range(steps):
            progress = self._one(progress, data, indices)
        return progress

    def __call__(self, state: TrainState, data, indices):
        indices = jnp.asarray(indices)
        progress = self.begin(state, data, indices)
        return self.finish(self.advance(progress, data, indices, indices.shape[0]))


def host_batches(state: TrainState, data, epoch: int, batch_size: int, *, start: int = 0) -> Iterable:
    """The epoch's batches from batch `start` on, gathered on the host (numpy), in the fused epoch's order."""
    indices = np.asarray(batch_indices(data_key(state), epoch, num_examples(data), batch_size))
    for rows in indices[start:]:
        yield take(data, rows)


class HostEpoch(_Stepped):
    """The path for data that stays on the host.

    `epoch(state, batches, num_batches) -> (state, logs, train_metrics)` runs a
    whole epoch over `batches` — batches of `batch_size` examples (pytrees of
    numpy or device arrays), e.g. `host_batches` through a
    `fdl.data.Prefetcher`, or a `fdl.data.NpyStream` epoch; `begin`, `advance`
    and `finish` take it in parts. The step and metrics are the fused epoch's.
    """

    def __init__(self, step, metrics: Sequence[Metric] = ()):
        super().__init__(metrics)
        self._begin = jax.jit(lambda state, batch, num_batches: begin_epoch(
            step, metrics, jax.tree.map(jnp.copy, state), batch, num_batches), static_argnums=2)
        self._one = jax.jit(lambda progress, batch: _step_once(step, metrics, progress, batch), donate_argnums=0)

    def begin(self, state: TrainState, batch, num_batches: int) -> EpochProgress:
        """The progress before the first of `num_batches` steps (`batch`, the first, shows their shapes)."""
        return self._begin(state, batch, num_batches)

    def advance(self, progress: EpochProgress, batches: Iterable) -> EpochProgress:
        """`progress` after one step per batch of `batches` (the epoch's next ones)."""
        for batch in batches:
            progress = self._one(progress, batch)
        return progress

    def __call__(self, state: TrainState, batches: Iterable, num_batches: int):
        batches = iter(batches)
        first = next(batches)
        progress = self.advance(self.begin(state, first, num_batches), [first])
        return self.finish(self.advance(progress, batches))


def replay_host_epoch(step, state: TrainState, batches):
    """The host path's `make_replay_epoch`: (last finite state, first failed step or -1)."""
    guarded = jax.jit(guard(step))
    halted = jnp.zeros((), bool)
    for i, batch in enumerate(batches):
        state, _, halted = guarded(state, batch, halted)
        if halted:
            return state, i
    return state, -1
