"""Whole epochs: fused into one `lax.scan` on the device, or stepped from the host.

Every path takes the batches in the order `fdl.data.order.batch_indices` gives
for (the run's data key, epoch) and drops the last partial batch, so they see
the same examples and give the same parameters.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdl.data.order import batch_indices
from fdl.metrics import Metric
from fdl.optim import current_learning_rate
from fdl.train.state import TrainState, data_key
from fdl.train.step import all_finite, guard


__all__ = [
    "make_train_epoch", "epoch_is_finite", "epoch_summary", "make_replay_epoch", "make_step_epoch",
    "host_batches", "make_host_epoch", "replay_host_epoch",
]


def _epoch_metrics(metrics: Sequence[Metric], outputs, targets) -> dict:
    """Exact metrics over every example trained on in the epoch (train-mode outputs)."""
    outputs = outputs.reshape(-1, *outputs.shape[2:])
    targets = targets.reshape(-1, *targets.shape[2:])
    mask = jnp.ones(outputs.shape[0], bool)
    return {m.name: m.compute(m.update(m.init(outputs.shape[0]), outputs, targets, mask))
            for m in metrics}


def make_train_epoch(step, batch_size: int, metrics: Sequence[Metric] = ()):
    """`train_epoch(state, x, y, epoch) -> (state, losses, train_metrics)` as one `lax.scan`.

    Shuffles on the device with the state's data key, so the data (device
    arrays x: (n, *input_shape), y: (n, ...)) is uploaded once per run. A pure
    function of its arguments: jit it, or vmap it over a population.

    Returns:
      state: after `n // batch_size` steps.
      losses: (n // batch_size,) float32 per-step losses.
      train_metrics: dict name -> value over the epoch's trained examples.
    """

    def train_epoch(state: TrainState, x, y, epoch):
        indices = batch_indices(data_key(state), epoch, x.shape[0], batch_size)

        def body(state, batch):
            state, loss, outputs = step(state, x[batch], y[batch])
            return state, (loss, outputs if metrics else None)

        state, (losses, outputs) = jax.lax.scan(body, state, indices)
        train_metrics = _epoch_metrics(metrics, outputs, y[indices]) if metrics else {}
        return state, losses, train_metrics

    return train_epoch


def epoch_is_finite(state: TrainState, losses) -> jax.Array:
    """() bool: every loss of the epoch and every parameter after it is finite."""
    return jnp.all(jnp.isfinite(losses)) & all_finite(state.params)


def epoch_summary(state: TrainState, losses, train_metrics: dict) -> dict:
    """What `fit` logs after an epoch, computed on the device so one transfer brings it all.

    Returns:
      {"finite": () bool, "step": () int32, "loss": () mean loss,
       "learning_rate": () (when the optimizer injects it), **train_metrics}.
    """
    summary = {"finite": epoch_is_finite(state, losses), "step": state.step,
               "loss": jnp.mean(losses), **train_metrics}
    try:
        summary["learning_rate"] = current_learning_rate(state.opt_state)
    except ValueError:  # a plain optax optimizer without injected hyperparameters
        pass
    return summary


def make_replay_epoch(step, batch_size: int):
    """`replay(state, x, y, epoch) -> (last finite state, first failed step or -1)`.

    Re-runs an epoch that went wrong under `guard`, from the state it started
    from, to find the step that produced a non-finite loss or params.
    """
    guarded = guard(step)

    def replay(state: TrainState, x, y, epoch):
        indices = batch_indices(data_key(state), epoch, x.shape[0], batch_size)

        def body(carry, batch):
            state, halted = carry
            state, _, _, now_halted = guarded(state, x[batch], y[batch], halted)
            return (state, now_halted), now_halted & ~halted

        (state, halted), failed_here = jax.lax.scan(body, (state, jnp.zeros((), bool)), indices)
        return state, jnp.where(halted, jnp.argmax(failed_here), -1)

    return replay


def _stepped(step, metrics: Sequence[Metric]):
    """The compiled pieces of an epoch stepped from the host, one jit call per step.

    The carry — a copy of the state (so the caller's starting state survives),
    the per-step losses and the metric accumulators — stays on the device and
    is donated to every step, so a step costs one dispatch and no allocation.

    Returns:
      begin(state, num_batches, batch_size) -> carry (compiled); advance(carry, i, x, y) -> carry
      (pure: each path compiles it with its own way of getting the batch, donating the
      carry); finish(carry) -> (state, losses (num_batches,), train_metrics) (compiled).
    """

    def begin(state, num_batches: int, batch_size: int):
        accumulators = {m.name: m.init(num_batches * batch_size) for m in metrics}
        return jax.tree.map(jnp.copy, state), jnp.zeros(num_batches, jnp.float32), accumulators

    def advance(carry, i, x, y):
        state, losses, accumulators = carry
        state, loss, outputs = step(state, x, y)
        mask = jnp.ones(outputs.shape[0], bool)
        accumulators = {m.name: m.update(accumulators[m.name], outputs, y, mask) for m in metrics}
        return state, losses.at[i].set(loss), accumulators

    def finish(carry):
        state, losses, accumulators = carry
        return state, losses, {m.name: m.compute(accumulators[m.name]) for m in metrics}

    return jax.jit(begin, static_argnums=(1, 2)), advance, jax.jit(finish)


def make_step_epoch(step, batch_size: int, metrics: Sequence[Metric] = ()):
    """The per-step path: `run(state, x, y, epoch) -> (state, losses, train_metrics)`.

    The same batches, step and metrics as the fused epoch, one jit call per
    step driven from the host; the data stays on the device and each call
    gathers its own batch.
    """
    begin, advance, finish = _stepped(step, metrics)
    one = jax.jit(lambda carry, x, y, indices, i: advance(carry, i, x[indices[i]], y[indices[i]]),
                  donate_argnums=0)
    order = jax.jit(lambda key, epoch, n: batch_indices(key, epoch, n, batch_size), static_argnums=2)

    def run(state, x, y, epoch):
        indices = order(data_key(state), epoch, x.shape[0])
        carry = begin(state, indices.shape[0], batch_size)
        for i in range(indices.shape[0]):
            carry = one(carry, x, y, indices, i)
        return finish(carry)

    return run


def host_batches(state: TrainState, x, y, epoch: int, batch_size: int) -> Iterable:
    """The epoch's batches gathered on the host (numpy), in the fused epoch's order."""
    indices = np.asarray(batch_indices(data_key(state), epoch, x.shape[0], batch_size))
    for batch in indices:
        yield x[batch], y[batch]


def make_host_epoch(step, batch_size: int, metrics: Sequence[Metric] = ()):
    """The path for data that stays on the host: `run(state, batches, num_batches) -> (state,
    losses, train_metrics)`.

    `batches` yields (x, y) batches of `batch_size` rows (numpy or device
    arrays), e.g. `host_batches` through a `fdl.data.Prefetcher`, or a
    `fdl.data.NpyStream` epoch; the step and metrics are the fused epoch's.
    """
    begin, advance, finish = _stepped(step, metrics)
    one = jax.jit(advance, donate_argnums=0)

    def run(state, batches, num_batches: int):
        carry = begin(state, num_batches, batch_size)
        for i, (x, y) in enumerate(batches):
            carry = one(carry, i, x, y)
        return finish(carry)

    return run


def replay_host_epoch(step, state: TrainState, batches):
    """The host path's `make_replay_epoch`: (last finite state, first failed step or -1)."""
    guarded = jax.jit(guard(step))
    halted = jnp.zeros((), bool)
    for i, (x, y) in enumerate(batches):
        state, _, _, halted = guarded(state, x, y, halted)
        if halted:
            return state, i
    return state, -1
