"""Whole epochs: fused into one `lax.scan` on the device, or stepped from the host.

The data is any pytree of arrays with a shared leading example axis (`(x, y)`, a
dict, a bare `x`). Every path takes the batches in the order
`fdl.data.order.batch_indices` gives for (the run's data key, epoch) and drops
the last partial batch, so they see the same examples and give the same
parameters. A step is `step(state, batch) -> (state, logs)` (fdl.train.step);
an epoch returns the per-step logs, stacked, and the exact metrics of the
predictions the objective gave (`fdl.objectives.PREDICTIONS`).
"""
from __future__ import annotations

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
    "num_examples", "take", "make_train_epoch", "make_batches_epoch", "stage_epoch",
    "epoch_is_finite", "epoch_summary", "make_replay_epoch", "make_replay_batches", "make_step_epoch",
    "host_batches", "make_host_epoch", "replay_host_epoch",
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


def _epoch_metrics(metrics: Sequence[Metric], predictions) -> dict:
    """Exact metrics over every example trained on in the epoch (train-mode outputs).

    predictions: (outputs, targets), each (steps, batch, ...).
    """
    if not metrics:
        return {}
    if predictions is None:
        names = ", ".join(m.name for m in metrics)
        raise ValueError(f"metrics [{names}]: the objective gives no predictions to measure — pass "
                         f"metrics=[] or return logs[{PREDICTIONS!r}] = (outputs, targets)")
    outputs, targets = (jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), part) for part in predictions)
    mask = jnp.ones(outputs.shape[0], bool)
    return {m.name: m.compute(m.update(m.init(outputs.shape[0]), outputs, targets, mask))
            for m in metrics}


def _scan_epoch(step, metrics: Sequence[Metric], state: TrainState, xs, batch_of):
    """One `lax.scan` of `step` over `xs` (batch i is `batch_of(xs[i])`): (state, logs, train_metrics)."""

    def body(state, item):
        state, logs = step(state, batch_of(item))
        logs, predictions = _split_predictions(logs)
        return state, (logs, predictions if metrics else None)

    state, (logs, predictions) = jax.lax.scan(body, state, xs)
    return state, logs, _epoch_metrics(metrics, predictions)


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
    batch_size) indices of one epoch (`fdl.data.batch_indices`).
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
    from, to find the step that produced a non-finite loss or params.
    """

    def replay(state: TrainState, data, indices):
        return _replay_scan(step, state, indices, lambda rows: take(data, rows))

    return replay


def make_replay_batches(step):
    """`make_replay_epoch` over batches in place: `replay(state, batches) -> (state, failed step or -1)`."""
    return lambda state, batches: _replay_scan(step, state, batches, lambda batch: batch)


def _stepped(step, metrics: Sequence[Metric]):
    """The compiled pieces of an epoch stepped from the host, one jit call per step.

    The carry — a copy of the state (so the caller's starting state survives),
    the per-step logs and the metric accumulators — stays on the device and
    is donated to every step, so a step costs one dispatch and no allocation.

    Returns:
      begin(state, batch, num_batches, batch_size) -> carry (compiled; `batch` shows the
      logs' shapes); advance(carry, i, batch) -> carry (pure: each path compiles it with its
      own way of getting the batch, donating the carry); finish(carry) -> (state, logs
      name -> (num_batches,), train_metrics) (compiled).
    """

    def begin(state, batch, num_batches: int, batch_size: int):
        logs, _ = _split_predictions(jax.eval_shape(step, state, batch)[1])
        buffers = {name: jnp.zeros((num_batches, *shape.shape), shape.dtype) for name, shape in logs.items()}
        accumulators = {m.name: m.init(num_batches * batch_size) for m in metrics}
        return jax.tree.map(jnp.copy, state), buffers, accumulators

    def advance(carry, i, batch):
        state, buffers, accumulators = carry
        state, logs = step(state, batch)
        logs, predictions = _split_predictions(logs)
        if metrics:
            if predictions is None:
                _epoch_metrics(metrics, None)  # raises, naming the metrics
            outputs, targets = predictions
            mask = jnp.ones(outputs.shape[0], bool)
            accumulators = {m.name: m.update(accumulators[m.name], outputs, targets, mask) for m in metrics}
        buffers = {name: buffers[name].at[i].set(value) for name, value in logs.items()}
        return state, buffers, accumulators

    def finish(carry):
        state, buffers, accumulators = carry
        return state, buffers, {m.name: m.compute(accumulators[m.name]) for m in metrics}

    return jax.jit(begin, static_argnums=(2, 3)), advance, jax.jit(finish)


def make_step_epoch(step, batch_size: int, metrics: Sequence[Metric] = ()):
    """The per-step path: `run(state, data, indices) -> (state, logs, train_metrics)`.

    The same batches, step and metrics as the fused epoch, one jit call per
    step driven from the host; the data stays on the device and each call
    gathers its own batch.
    """
    begin, advance, finish = _stepped(step, metrics)
    one = jax.jit(lambda carry, data, indices, i: advance(carry, i, take(data, indices[i])),
                  donate_argnums=0)

    def run(state, data, indices):
        indices = jnp.asarray(indices)
        carry = begin(state, take(data, indices[0]), indices.shape[0], batch_size)
        for i in range(indices.shape[0]):
            carry = one(carry, data, indices, i)
        return finish(carry)

    return run


def host_batches(state: TrainState, data, epoch: int, batch_size: int) -> Iterable:
    """The epoch's batches gathered on the host (numpy), in the fused epoch's order."""
    indices = np.asarray(batch_indices(data_key(state), epoch, num_examples(data), batch_size))
    for rows in indices:
        yield take(data, rows)


def make_host_epoch(step, batch_size: int, metrics: Sequence[Metric] = ()):
    """The path for data that stays on the host: `run(state, batches, num_batches) -> (state,
    logs, train_metrics)`.

    `batches` yields batches of `batch_size` examples (pytrees of numpy or
    device arrays), e.g. `host_batches` through a `fdl.data.Prefetcher`, or a
    `fdl.data.NpyStream` epoch; the step and metrics are the fused epoch's.
    """
    begin, advance, finish = _stepped(step, metrics)
    one = jax.jit(advance, donate_argnums=0)

    def run(state, batches, num_batches: int):
        carry = None
        for i, batch in enumerate(batches):
            if carry is None:
                carry = begin(state, batch, num_batches, batch_size)
            carry = one(carry, i, batch)
        return finish(carry)

    return run


def replay_host_epoch(step, state: TrainState, batches):
    """The host path's `make_replay_epoch`: (last finite state, first failed step or -1)."""
    guarded = jax.jit(guard(step))
    halted = jnp.zeros((), bool)
    for i, batch in enumerate(batches):
        state, _, halted = guarded(state, batch, halted)
        if halted:
            return state, i
    return state, -1
