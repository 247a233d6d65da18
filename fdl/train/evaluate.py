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

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdl.metrics import Metric
from fdl.nn.core import Layer, batched
from fdl.objectives import PREDICTIONS
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

    def __init__(self, model: Layer, *, loss: Loss | None = None, objective=None,
                 metrics: Sequence[Metric] = (), batch_size: int = DEFAULT_EVAL_BATCH_SIZE):
        if loss is not None and objective is not None:
            raise ValueError("Evaluator: give a per-example loss or an objective, not both")
        self.model, self.loss, self.metrics, self.batch_size = model, loss, tuple(metrics), batch_size
        self.objective = objective
        apply = batched(model)
        if objective is not None:
            self._objective_step = jax.jit(self._objective_batch, donate_argnums=2)
            self._log_names: dict = {}  # batch shapes -> the objective's log names, traced once
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

    def _objective_batch(self, params, model_state, acc, batch):
        """Adds one batch's objective value and logs, weighted by its size, to the sums."""
        eval_apply = functools.partial(batched(self.model), train=False)
        value, (_, logs) = self.objective(eval_apply, params, model_state, batch, None)
        logs = dict(logs)
        predictions = logs.pop(PREDICTIONS, None)
        size = jax.tree.leaves(batch)[0].shape[0]
        acc = dict(acc, count=acc["count"] + size)
        for name, log in {"loss": value, **logs}.items():
            acc[name] = acc[name] + size * log
        if self.metrics:
            if predictions is None:
                raise ValueError(f"metrics [{', '.join(m.name for m in self.metrics)}]: the objective "
                                 "gives no predictions to measure — pass metrics=[]")
            outputs, targets = predictions
            mask = jnp.ones(size, bool)
            for metric in self.metrics:
                acc[metric.name] = metric.update(acc[metric.name], outputs, targets, mask)
        return acc

    def _evaluate_objective(self, params, model_state, data) -> dict:
        """Mean objective value and logs over every example (the last batch at its own size)."""
        n = jax.tree.leaves(data)[0].shape[0]
        batches = [jax.tree.map(lambda a: a[start:start + self.batch_size], data)
                   for start in range(0, n, self.batch_size)]
        signature = (jax.tree.structure(batches[0]),
                     tuple((leaf.shape, str(leaf.dtype)) for leaf in jax.tree.leaves(batches[0])))
        if signature not in self._log_names:
            eval_apply = functools.partial(batched(self.model), train=False)
            _, (_, logs) = jax.eval_shape(lambda b: self.objective(eval_apply, params, model_state, b, None),
                                          batches[0])
            self._log_names[signature] = ["loss", *(k for k in logs if k != PREDICTIONS)]
        names = self._log_names[signature]
        capacity = 1 << max(0, math.ceil(math.log2(n)))
        acc = {"count": jnp.zeros((), jnp.int32), **{k: jnp.zeros((), jnp.float32) for k in names},
               **{m.name: m.init(capacity) for m in self.metrics}}
        for batch in batches:
            acc = self._objective_step(params, model_state, acc, batch)
        acc = jax.device_get(acc)
        results = {k: float(acc[k] / acc["count"]) for k in names}
        for metric in self.metrics:
            value = np.asarray(metric.compute(acc[metric.name]))
            results[metric.name] = float(value) if value.ndim == 0 else value
        return results

    def _results(self, acc):
        return {"loss": acc["loss_sum"] / acc["count"],
                **{m.name: m.compute(acc[m.name]) for m in self.metrics}}

    def evaluate(self, params, model_state, x, y=None) -> dict:
        """Loss (mean over examples) and metrics over a whole split, in eval mode.

        Args:
          x: (n, *input_shape) array; y: (n, ...) targets. For an objective's
            evaluator, `x` is the split's batch pytree and `y` is left out.

        Returns:
          dict name -> float (or numpy array for per-class metrics); "loss" if the
          evaluator has a loss or an objective (and then the objective's logs).
        """
        if self.objective is not None:
            return self._evaluate_objective(params, model_state, x)
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
