"""Evaluation and prediction over splits of any size, without recompiling.

A split is cut into batches of `batch_size` (the last one padded and masked),
and each batch is one call of the same compiled function, so a new split size
never compiles anything new. Metric accumulators stay on the device until the
end (see fdl.metrics: exact counts and sums, never averaged batch averages).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdl.metrics import Metric
from fdl.nn.core import Layer, batched
from fdl.train.step import Loss

DEFAULT_EVAL_BATCH_SIZE = 512


def padded_batches(x, y, batch_size: int):
    """Yields (x, y, mask) batches of exactly `batch_size` rows, padding the last by repetition.

    `y` may be None. Padding repeats row 0 so that padded rows stay valid inputs
    (no NaN from zeros through a log, say); `mask` is False on them.
    """
    n = x.shape[0]
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = np.concatenate([np.arange(start, stop), np.zeros(batch_size - (stop - start), int)])
        mask = np.arange(batch_size) < stop - start
        yield x[rows], (None if y is None else y[rows]), mask


@lru_cache(maxsize=64)
def _compiled_eval_step(model: Layer, loss: Loss | None, metrics: tuple[Metric, ...]):
    apply = batched(model)

    def eval_step(params, model_state, acc, x, y, mask):
        outputs, _ = apply(params, model_state, x, train=False)
        acc = dict(acc)
        if loss is not None:
            losses = jax.vmap(loss)(outputs, y)
            acc["loss_sum"] = acc["loss_sum"] + jnp.sum(jnp.where(mask, losses, 0.0))
        acc["count"] = acc["count"] + jnp.sum(mask)
        for metric in metrics:
            acc[metric.name] = metric.update(acc[metric.name], outputs, y, mask)
        return acc

    return jax.jit(eval_step, donate_argnums=2)


def evaluate_arrays(model: Layer, params, model_state, x, y, *, loss: Loss | None,
                    metrics: Sequence[Metric] = (), batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> dict:
    """Loss (mean over examples) and metrics over a whole split, in eval mode.

    Args:
      x: (n, *input_shape) array; y: (n, ...) targets.
      loss: per-example loss, or None to skip it.
      metrics: fdl.metrics.Metric objects.

    Returns:
      dict name -> float (or numpy array for per-class metrics); "loss" if a loss was given.
    """
    metrics = tuple(metrics)
    eval_step = _compiled_eval_step(model, loss, metrics)
    # Metrics that keep every score (roc_auc) get a power-of-two buffer, so splits
    # of different sizes share one compiled step.
    capacity = 1 << max(0, math.ceil(math.log2(x.shape[0])))
    acc = {"count": jnp.zeros((), jnp.int32), "loss_sum": jnp.zeros((), jnp.float32),
           **{m.name: m.init(capacity) for m in metrics}}
    for xb, yb, mask in padded_batches(x, y, batch_size):
        acc = eval_step(params, model_state, acc, xb, yb, mask)
    results = {}
    if loss is not None:
        results["loss"] = float(acc["loss_sum"] / acc["count"])
    for metric in metrics:
        value = np.asarray(metric.compute(acc[metric.name]))
        results[metric.name] = float(value) if value.ndim == 0 else value
    return results


@lru_cache(maxsize=64)
def _compiled_predict(model: Layer):
    apply = batched(model)
    return jax.jit(lambda params, model_state, x: apply(params, model_state, x, train=False)[0])


def predict_arrays(model: Layer, params, model_state, x, *,
                   batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> np.ndarray:
    """Model outputs for every row of x (n, *input_shape), in eval mode, as numpy.

    A model with several outputs (a tuple) gives the tuple of stacked outputs.
    """
    predict = _compiled_predict(model)
    chunks = [jax.tree.map(lambda a: np.asarray(a)[mask], predict(params, model_state, xb))
              for xb, _, mask in padded_batches(x, None, batch_size)]
    return jax.tree.map(lambda *parts: np.concatenate(parts), *chunks)
