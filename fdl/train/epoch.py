"""Whole epochs: fused into one `lax.scan` on the device, or stepped from the host.

Both paths take the batches in the order `fdl.data.order.batch_indices` gives
for (the run's data key, epoch) and drop the last partial batch, so they see
the same examples and give the same parameters.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdl.data.order import batch_indices
from fdl.metrics import Metric
from fdl.train.state import TrainState, data_key
from fdl.train.step import guard


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
      state: after `n // batch_size` steps; if a step's loss was not finite, the
        state before that step (and every later step is skipped).
      losses: (n // batch_size,) float32 per-step losses; NaN marks the halt.
      train_metrics: dict name -> value over the epoch's trained examples.
    """
    guarded = guard(step)

    def train_epoch(state: TrainState, x, y, epoch):
        indices = batch_indices(data_key(state), epoch, x.shape[0], batch_size)

        def body(carry, batch):
            state, halted = carry
            state, loss, outputs, halted = guarded(state, x[batch], y[batch], halted)
            return (state, halted), (loss, outputs if metrics else None)

        (state, _), (losses, outputs) = jax.lax.scan(body, (state, jnp.zeros((), bool)), indices)
        train_metrics = _epoch_metrics(metrics, outputs, y[indices]) if metrics else {}
        return state, losses, train_metrics

    return train_epoch


def host_batches(state: TrainState, x, y, epoch: int, batch_size: int) -> Iterable:
    """The epoch's batches gathered on the host (numpy), in the fused epoch's order."""
    indices = np.asarray(batch_indices(data_key(state), epoch, x.shape[0], batch_size))
    for batch in indices:
        yield x[batch], y[batch]


def run_host_epoch(jitted_guarded_step, state: TrainState, batches: Iterable):
    """Steps through `batches` with one compiled call per step.

    Args:
      jitted_guarded_step: `jax.jit(guard(step), donate_argnums=0)`.
      state: the state to start from.
      batches: an iterable of (x, y) device or numpy arrays, e.g. `host_batches`
        or a `fdl.data.NpyStream` epoch.

    Returns:
      (state, losses (num_batches,) numpy): the same contract as the fused epoch.
    """
    halted = jnp.zeros((), bool)
    losses = []
    for x, y in batches:
        state, loss, _, halted = jitted_guarded_step(state, x, y, halted)
        losses.append(loss)
    return state, np.asarray(jnp.stack(losses))
