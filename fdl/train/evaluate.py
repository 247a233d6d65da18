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
from fdl.objectives import PREDICTIONS, takes_step
from fdl.train.checks import host_examples
from fdl.train.mesh import place
from fdl.train.step import Loss

__all__ = ["DEFAULT_EVAL_BATCH_SIZE", "Evaluator", "to_floats", "padded_batches", "objective_log_names",
           "objective_sums", "make_objective_accumulate"]

DEFAULT_EVAL_BATCH_SIZE = 512


def padded_batches(x, y, batch_size: int):
    """Yields (x, y, mask) batches of exactly `batch_size` rows, padding the last by repetition.

    `x` may be a pytree of such arrays (a model's dict of inputs); `y` may be None.
    Padding repeats row 0 so that padded rows stay valid inputs (no NaN from zeros
    through a log, say); `mask` is False on them.
    """
    n = len(jax.tree.leaves(x)[0])
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = np.concatenate([np.arange(start, stop), np.zeros(batch_size - (stop - start), int)])
        mask = np.arange(batch_size) < stop - start
        yield jax.tree.map(lambda leaf: leaf[rows], x), (None if y is None else y[rows]), mask


def _scored(objective, apply, params, model_state, batch, step):
    """The objective in eval mode (no key); `step` (() int) passed when it takes one (a KL warm-up)."""
    if not takes_step(objective):
        return objective(apply, params, model_state, batch, None)
    if step is None:
        raise ValueError("step: this objective depends on the optimizer step (takes_step) — evaluate it "
                         "with step=state.step (fit passes the step its state reached)")
    return objective(apply, params, model_state, batch, None, step=step)


def objective_log_names(model: Layer, objective, params, model_state, batch) -> list[str]:
    """["loss", *the objective's log names] in eval mode, read off a trace (nothing runs)."""
    eval_apply = functools.partial(batched(model), train=False)
    _, (_, logs) = jax.eval_shape(lambda p, s, b: _scored(objective, eval_apply, p, s, b, jnp.zeros((), jnp.int32)),
                                  params, model_state, batch)
    return ["loss", *(k for k in logs if k != PREDICTIONS)]


def objective_sums(names: Sequence[str], metrics: Sequence[Metric], capacity: int) -> dict:
    """The empty accumulator of `make_objective_accumulate`: a count, a sum per name, each metric's."""
    return {"count": jnp.zeros((), jnp.int32), **{k: jnp.zeros((), jnp.float32) for k in names},
            **{m.name: m.init(capacity) for m in metrics}}


def make_objective_accumulate(model: Layer, objective, metrics: Sequence[Metric] = ()):
    """`accumulate(params, model_state, acc, batch, step=None) -> acc`: one batch of an objective, eval mode.

    Adds the batch's objective value and logs, each weighted by the batch's size,
    to the sums of `acc` (`objective_sums`), and its predictions to the metrics;
    sum / count is then the mean over examples. An objective that depends on
    the optimizer step (`fdl.objectives.takes_step`: a KL warm-up) is scored at
    `step`, the step of the state evaluated — as training would weigh it next.
    Pure: `Evaluator` jits it per batch, a population scans it over each
    member's batches.
    """
    eval_apply = functools.partial(batched(model), train=False)

    def accumulate(params, model_state, acc, batch, step=None):
        value, (_, logs) = _scored(objective, eval_apply, params, model_state, batch, step)
        logs = dict(logs)
        predictions = logs.pop(PREDICTIONS, None)
        size = jax.tree.leaves(batch)[0].shape[0]
        acc = dict(acc, count=acc["count"] + size)
        for name, log in {"loss": value, **logs}.items():
            acc[name] = acc[name] + size * log
        if metrics:
            if predictions is None:
                raise ValueError(f"metrics [{', '.join(m.name for m in metrics)}]: the objective "
                                 "gives no predictions to measure — pass metrics=[]")
            outputs, targets = predictions
            mask = jnp.ones(size, bool)
            for metric in metrics:
                acc[metric.name] = metric.update(acc[metric.name], outputs, targets, mask)
        return acc

    return accumulate


def _capacity(n: int) -> int:
    """The power of two >= n: the size of the buffers of metrics that keep every score (roc_auc)."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _stacked_size(stacked) -> int:
    """num_batches * batch_size of batches stacked along a leading axis (any pytree)."""
    leaf = jax.tree.leaves(stacked)[0]
    return leaf.shape[0] * leaf.shape[1]


def to_floats(scores: dict) -> dict:
    """Scores read from the device as Python floats (0-d) or numpy arrays (per-class metrics)."""
    return {name: float(value) if np.ndim(value) == 0 else np.asarray(value) for name, value in scores.items()}


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
            self._accumulate = make_objective_accumulate(model, objective, self.metrics)
            self._objective_step = jax.jit(self._accumulate, donate_argnums=2)
            self._log_names: dict = {}  # batch shapes -> the objective's log names, traced once
        self._outputs = jax.jit(lambda params, model_state, x: apply(params, model_state, x, train=False)[0])
        self._step = jax.jit(self._eval_step, donate_argnums=2)
        self._finish = jax.jit(self._results)
        self._staged = jax.jit(self.staged_scores)

    def _eval_step(self, params, model_state, acc, x, y, mask):
        outputs, _ = batched(self.model)(params, model_state, x, train=False)
        acc = dict(acc, count=acc["count"] + jnp.sum(mask))
        if self.loss is not None:
            losses = jax.vmap(self.loss)(outputs, y)
            acc["loss_sum"] = acc["loss_sum"] + jnp.sum(jnp.where(mask, losses, 0.0))
        for metric in self.metrics:
            acc[metric.name] = metric.update(acc[metric.name], outputs, y, mask)
        return acc

    def _objective_names(self, params, model_state, batch) -> list[str]:
        """["loss", *the objective's logs] for batches shaped like `batch`, traced once per shape."""
        signature = (jax.tree.structure(batch),
                     tuple((leaf.shape, str(leaf.dtype)) for leaf in jax.tree.leaves(batch)))
        if signature not in self._log_names:
            self._log_names[signature] = objective_log_names(self.model, self.objective, params,
                                                             model_state, batch)
        return self._log_names[signature]

    def _empty(self, names, capacity: int) -> dict:
        """The accumulator of a split: a count, the loss sum (or the objective's sums), each metric's."""
        if self.objective is not None:
            return objective_sums(names, self.metrics, capacity)
        return {"count": jnp.zeros((), jnp.int32), "loss_sum": jnp.zeros((), jnp.float32),
                **{m.name: m.init(capacity) for m in self.metrics}}

    def _objective_results(self, acc, names) -> dict:
        return {**{k: acc[k] / acc["count"] for k in names},
                **{m.name: m.compute(acc[m.name]) for m in self.metrics}}

    def _evaluate_objective(self, params, model_state, data, step) -> dict:
        """Mean objective value and logs over every example (the last batch at its own size)."""
        n = jax.tree.leaves(data)[0].shape[0]
        batches = [jax.tree.map(lambda a: a[start:start + self.batch_size], data)
                   for start in range(0, n, self.batch_size)]
        names = self._objective_names(params, model_state, batches[0])
        acc = self._empty(names, _capacity(n))
        for batch in batches:
            acc = self._objective_step(params, model_state, acc, batch, step)
        results = to_floats(self._objective_results(jax.device_get(acc), names))  # device_get sorts the keys
        return {name: results[name] for name in [*names, *(m.name for m in self.metrics)]}

    def stage(self, x, y=None, *, sharding=None):
        """A split cut into this evaluator's batches and put on the device once, for
        `evaluate_staged` (a split evaluated after every epoch). Arguments as in `evaluate`;
        `sharding`: where to put it (default: the default device; with a mesh, replicated on it).

        Returns:
          for a loss, (x, y, mask) stacked (num_batches, batch_size, ...), the last
          batch padded (y None without targets); for an objective, (the full
          batches stacked or None, the last partial batch or None).
        """
        if self.objective is not None:
            n = jax.tree.leaves(x)[0].shape[0]
            full = n // self.batch_size * self.batch_size
            stacked = None if full == 0 else jax.tree.map(
                lambda a: np.asarray(a)[:full].reshape(-1, self.batch_size, *a.shape[1:]), x)
            remainder = None if full == n else jax.tree.map(lambda a: np.asarray(a)[full:], x)
            return place((stacked, remainder), sharding)
        parts = list(padded_batches(host_examples(x), None if y is None else np.asarray(y),
                                    self.batch_size))  # x: an array, or a model's dict of inputs
        return place(tuple(None if parts[0][i] is None else jax.tree.map(lambda *rows: np.stack(rows),
                                                                         *[part[i] for part in parts])
                           for i in range(3)), sharding)

    def evaluate_staged(self, params, model_state, staged, step=None) -> dict:
        """`evaluate` of a staged split as ONE compiled call that returns device arrays without waiting.

        The caller reads them when it needs them (`jax.device_get`, then `to_floats`),
        so a training loop dispatches validation right behind the epoch.
        """
        return self._staged(params, model_state, staged, step)

    def staged_scores(self, params, model_state, staged, step=None) -> dict:
        """The scores of a staged split as a pure function (jit it, or vmap it over a population);
        `step`: the evaluated state's step, for an objective that depends on it."""
        if self.objective is not None:
            stacked, remainder = staged
            example = remainder if stacked is None else jax.tree.map(lambda a: a[0], stacked)
            names = self._objective_names(params, model_state, example)
            n = (0 if stacked is None else _stacked_size(stacked)) + \
                (0 if remainder is None else jax.tree.leaves(remainder)[0].shape[0])
            acc = self._empty(names, _capacity(n))
            if stacked is not None:
                acc, _ = jax.lax.scan(lambda acc, batch: (self._accumulate(params, model_state, acc, batch, step),
                                                          None), acc, stacked)
            if remainder is not None:
                acc = self._accumulate(params, model_state, acc, remainder, step)
            return self._objective_results(acc, names)
        acc = self._empty((), _capacity(_stacked_size(staged[0])))
        acc, _ = jax.lax.scan(lambda acc, batch: (self._eval_step(params, model_state, acc, *batch), None),
                              acc, staged)
        results = self._results(acc)
        return results if self.loss is not None else {k: v for k, v in results.items() if k != "loss"}

    def _results(self, acc):
        return {"loss": acc["loss_sum"] / acc["count"],
                **{m.name: m.compute(acc[m.name]) for m in self.metrics}}

    def evaluate(self, params, model_state, x, y=None, *, step=None) -> dict:
        """Loss (mean over examples) and metrics over a whole split, in eval mode.

        Args:
          x: (n, *input_shape) array; y: (n, ...) targets. For an objective's
            evaluator, `x` is the split's batch pytree and `y` is left out.
          step: the state's step (`state.step`), needed by an objective that
            depends on it (`fdl.objectives.takes_step`).

        Returns:
          dict name -> float (or numpy array for per-class metrics); "loss" if the
          evaluator has a loss or an objective (and then the objective's logs).
        """
        if self.objective is not None:
            return self._evaluate_objective(params, model_state, x, step)
        # Metrics that keep every score (roc_auc) get a power-of-two buffer, so splits
        # of different sizes share one compiled step.
        acc = self._empty((), _capacity(len(jax.tree.leaves(x)[0])))  # x: an array or a dict of inputs
        for xb, yb, mask in padded_batches(x, y, self.batch_size):
            acc = self._step(params, model_state, acc, xb, yb, mask)
        results = to_floats(jax.device_get(self._finish(acc)))  # device_get sorts the keys
        names = (["loss"] if self.loss is not None else []) + [m.name for m in self.metrics]
        return {name: results[name] for name in names}

    def predict(self, params, model_state, x) -> np.ndarray:
        """Model outputs for every row of x (n, *input_shape), in eval mode, as numpy.

        A model with several outputs (a tuple) gives the tuple of stacked outputs.
        """
        chunks = [jax.tree.map(lambda a: np.asarray(a)[mask], self._outputs(params, model_state, xb))
                  for xb, _, mask in padded_batches(x, None, self.batch_size)]
        return jax.tree.map(lambda *parts: np.concatenate(parts), *chunks)
