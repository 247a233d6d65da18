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


def make_step_epoch(step, batch_size: int):
    """The per-step path: `run(state, x, y, epoch) -> (state, losses, {})`, one jit call per step.

    The same batches and the same step as the fused epoch, driven from the
    host; the data stays on the device and each call gathers its own batch.
    Each call donates the state it steps (the epoch works on a copy, so the
    caller's starting state survives) and writes its loss into a donated
    per-epoch buffer, so a step costs one dispatch and no allocation.
    """

    def one_step(state, losses, x, y, indices, i):
        batch = indices[i]
        state, loss, _ = step(state, x[batch], y[batch])
        return state, losses.at[i].set(loss)

    one_step = jax.jit(one_step, donate_argnums=(0, 1))
    copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))
    order = jax.jit(lambda key, epoch, n: batch_indices(key, epoch, n, batch_size), static_argnums=2)

    def run(state, x, y, epoch):
        indices = order(data_key(state), epoch, x.shape[0])
        state, losses = copy(state), jnp.zeros(indices.shape[0], jnp.float32)
        for i in range(indices.shape[0]):
            state, losses = one_step(state, losses, x, y, indices, i)
        return state, losses, {}

    return run


def host_batches(state: TrainState, x, y, epoch: int, batch_size: int) -> Iterable:
    """The epoch's batches gathered on the host (numpy), in the fused epoch's order."""
    indices = np.asarray(batch_indices(data_key(state), epoch, x.shape[0], batch_size))
    for batch in indices:
        yield x[batch], y[batch]


def make_host_epoch(step):
    """The path for data that stays on the host: `run(state, batches) -> (state, losses, {})`.

    `batches` yields (x, y) batches (numpy or device arrays), e.g. `host_batches`
    through a `fdl.data.Prefetcher`, or a `fdl.data.NpyStream` epoch. Like the
    per-step path it donates a copy of the state and a loss buffer.
    """

    def one_step(state, losses, i, x, y):
        state, loss, _ = step(state, x, y)
        return state, losses.at[i].set(loss)

    one_step = jax.jit(one_step, donate_argnums=(0, 1))
    copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))

    def run(state, batches, num_batches: int):
        state, losses = copy(state), jnp.zeros(num_batches, jnp.float32)
        for i, (x, y) in enumerate(batches):
            state, losses = one_step(state, losses, i, x, y)
        return state, losses, {}

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
