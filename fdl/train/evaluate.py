"""Evaluation and prediction over splits of any size, without recompiling.

An `Evaluator` owns the compiled programs of one (model, loss, metrics): a split
is cut into batches of `batch_size` (the last one padded and masked), and each
batch is one call of the same compiled function, so a new split size, a new
state or a new split never compiles anything new. Whoever evaluates repeatedly
(`fit` after every epoch, a loaded run on each split) keeps one Evaluator.
Metric accumulators stay on the device until the end (see fdl.metrics: exact
counts and sums, never averaged batch averages).
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdl.metrics import Metric
from fdl.nn.core import Layer, batched
from fdl.train.step import Loss

__all__ = ["DEFAULT_EVAL_BATCH_SIZE", "Evaluator", "padded_batches"]

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


class Evaluator:
    """The compiled evaluation and prediction programs of one model, loss and metric list.

    Example:
      >>> evaluator = Evaluator(model, loss=fdl.losses.get_loss("cross_entropy"),
      ...                       metrics=fdl.metrics.get_metrics(["accuracy"], 10))
      >>> scores = evaluator.evaluate(state.params, state.model_state, x_val, y_val)
      >>> sorted(scores)
      ['accuracy', 'loss']
      >>> logits = evaluator.predict(state.params, state.model_state, x_test)
      >>> logits.shape == (len(x_test), 10)
      True

    Args:
      model: the Layer (applied in eval mode: dropout off, BatchNorm running statistics).
      loss: per-example loss, or None to report metrics only.
      metrics: fdl.metrics.Metric objects.
      batch_size: rows per compiled call.
    """

    def __init__(self, model: Layer, *, loss: Loss | None = None, metrics: Sequence[Metric] = (),
                 batch_size: int = DEFAULT_EVAL_BATCH_SIZE):
        self.model, self.loss, self.metrics, self.batch_size = model, loss, tuple(metrics), batch_size
        apply = batched(model)
        self._outputs = jax.jit(lambda params, model_state, x: apply(params, model_state, x, train=False)[0])
        self._step = jax.jit(self._eval_step, donate_argnums=2)
        self._finish = jax.jit(self._results)

    def _eval_step(self, params, model_state, acc, x, y, mask):
        outputs, _ = batched(self.model)(params, model_state, x, train=False)
        acc = dict(acc, count=acc["count"] + jnp.sum(mask))
        if self.loss is not None:
            losses = jax.vmap(self.loss)(outputs, y)
            acc["loss_sum"] = acc["loss_sum"] + jnp.sum(jnp.where(mask, losses, 0.0))
        for metric in self.metrics:
            acc[metric.name] = metric.update(acc[metric.name], outputs, y, mask)
        return acc

    def _results(self, acc):
        return {"loss": acc["loss_sum"] / acc["count"],
                **{m.name: m.compute(acc[m.name]) for m in self.metrics}}

    def evaluate(self, params, model_state, x, y) -> dict:
        """Loss (mean over examples) and metrics over a whole split, in eval mode.

        Args:
          x: (n, *input_shape) array; y: (n, ...) targets.

        Returns:
          dict name -> float (or numpy array for per-class metrics); "loss" if the
          evaluator has a loss.
        """
        # Metrics that keep every score (roc_auc) get a power-of-two buffer, so splits
        # of different sizes share one compiled step.
        capacity = 1 << max(0, math.ceil(math.log2(x.shape[0])))
        acc = {"count": jnp.zeros((), jnp.int32), "loss_sum": jnp.zeros((), jnp.float32),
               **{m.name: m.init(capacity) for m in self.metrics}}
        for xb, yb, mask in padded_batches(x, y, self.batch_size):
            acc = self._step(params, model_state, acc, xb, yb, mask)
        acc = jax.device_get(self._finish(acc))
        results = {"loss": float(acc.pop("loss"))} if self.loss is not None else {}
        for name, value in acc.items():
            value = np.asarray(value)
            results[name] = float(value) if value.ndim == 0 else value
        return results

    def predict(self, params, model_state, x) -> np.ndarray:
        """Model outputs for every row of x (n, *input_shape), in eval mode, as numpy.

        A model with several outputs (a tuple) gives the tuple of stacked outputs.
        """
        chunks = [jax.tree.map(lambda a: np.asarray(a)[mask], self._outputs(params, model_state, xb))
                  for xb, _, mask in padded_batches(x, None, self.batch_size)]
        return jax.tree.map(lambda *parts: np.concatenate(parts), *chunks)
