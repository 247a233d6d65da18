"""Exact metrics over a whole split, accumulated batch by batch.

A ``Metric`` never averages batch averages: ``update`` adds counts and sums to a
fixed-shape accumulator (a pytree of arrays), so the engine can carry it through
``lax.scan`` over batches inside one compiled call, and ``compute`` turns the
totals into the value for the whole split::

    metric = get_metric("f1", num_classes=10)
    acc = metric.init(num_examples)
    for outputs, targets, mask in batches:        # or lax.scan
        acc = metric.update(acc, outputs, targets, mask)
    value = metric.compute(acc)

``outputs`` are model outputs: logits (B, C) for a classifier, one logit (B,) or
(B, 1) for a binary classifier (positive when logit > 0), values for a regressor.
``targets`` are int labels (B,) or one-hot (B, C); 0/1 labels for binary.
``mask`` (B,) bool marks the real rows of a padded last batch; False rows never
count.

Conventions:

* confusion matrix: rows are TRUE classes, columns PREDICTED classes
  (scikit-learn's ``confusion_matrix``).
* A ratio with a zero denominator (e.g. precision of a class never predicted)
  is 0.0, like scikit-learn's ``zero_division=0``.
* Macro averages run over the classes present in the targets or the
  predictions (scikit-learn's default ``labels``); the per-class variants
  return all ``num_classes`` values.
* Precision/recall/F1 of a single-logit binary classifier are those of the
  positive class (scikit-learn's ``average="binary"``).
* ``roc_auc`` is exact (Mann-Whitney U with average ranks for ties); it returns
  NaN when a class is missing or more examples arrive than ``num_examples``.
"""
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from fdl.errors import unknown_name_message

__all__ = ["Metric", "CountState", "ConfusionState", "ScoreBufferState", "get_metric",
           "get_metrics", "infer_num_classes", "compute_all", "accuracy", "top_k_accuracy",
           "roc_auc", "mann_whitney_auc"]


class Metric(NamedTuple):
    """An exact, jit-friendly metric: ``init``/``update``/``compute`` over a split.

    Attributes:
      name: the key it is logged under, e.g. ``"top_5_accuracy"``.
      init: ``init(num_examples) -> acc``, a pytree of arrays (only ``roc_auc``
        uses ``num_examples``, to preallocate its score buffer).
      update: ``update(acc, outputs (B, ...), targets (B, ...), mask (B,) bool) -> acc``.
      compute: ``compute(acc) -> () or (C,) or (C, C) array``.
    """

    name: str
    init: Callable[[int], Any]
    update: Callable[[Any, jax.Array, jax.Array, jax.Array], Any]
    compute: Callable[[Any], jax.Array]


class CountState(NamedTuple):
    """Accumulator of a ratio ``total / count``."""

    total: jax.Array  # () int32 (hits) or float32 (sum of errors)
    count: jax.Array  # () int32, real examples (or elements) seen


class ConfusionState(NamedTuple):
    """Accumulator of the confusion-matrix metrics."""

    matrix: jax.Array  # (C, C) int32, rows = true class, cols = predicted class
    single_logit: jax.Array  # () bool, outputs were one logit per example (binary)


class ScoreBufferState(NamedTuple):
    """Accumulator of ``roc_auc``: every real example's score, in arrival order."""

    scores: jax.Array  # (num_examples,) float32, positive-class score (logit)
    labels: jax.Array  # (num_examples,) bool, true label is positive
    count: jax.Array  # () int32, real examples written so far


def _is_single_logit(outputs: jax.Array) -> bool:
    """True for a binary classifier's (B,) or (B, 1) outputs (a static shape test)."""
    return outputs.ndim == 1 or outputs.shape[-1] == 1


def _predicted_and_true(outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Predicted and true class indices, each (B,) int32."""
    if _is_single_logit(outputs):
        predicted = jnp.reshape(outputs, (-1,)) > 0
        true = jnp.reshape(targets, (-1,)) > 0.5
        return predicted.astype(jnp.int32), true.astype(jnp.int32)
    predicted = jnp.argmax(outputs, axis=-1)
    true = targets if targets.ndim == 1 else jnp.argmax(targets, axis=-1)
    return predicted.astype(jnp.int32), true.astype(jnp.int32)


def _ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator`` as float32, 0.0 where the denominator is 0."""
    numerator = jnp.asarray(numerator, jnp.float32)
    denominator = jnp.asarray(denominator, jnp.float32)
    return jnp.where(denominator > 0, numerator / jnp.maximum(denominator, 1e-30), 0.0)


def _count_metric(name: str, hits: Callable[[jax.Array, jax.Array], jax.Array]) -> Metric:
    """A ratio metric from ``hits(outputs, targets) -> (B,) per-row value``."""

    def init(num_examples):
        del num_examples
        return CountState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def update(acc, outputs, targets, mask):
        mask = mask.astype(jnp.int32)
        return CountState(
            acc.total + jnp.sum(hits(outputs, targets).astype(jnp.int32) * mask),
            acc.count + jnp.sum(mask),
        )

    return Metric(name, init, update, lambda acc: _ratio(acc.total, acc.count))


def accuracy() -> Metric:
    """Fraction of real examples whose predicted class is the true class."""

    def hits(outputs, targets):
        predicted, true = _predicted_and_true(outputs, targets)
        return predicted == true

    return _count_metric("accuracy", hits)


def top_k_accuracy(k: int) -> Metric:
    """Fraction of real examples whose true class is among the ``k`` largest logits.

    Ties are broken towards the lower class index (``lax.top_k``), as scikit-learn's
    ``top_k_accuracy_score`` does for distinct scores.
    """
    if k < 1:
        raise ValueError(f"top_k_accuracy: k must be >= 1, got {k}")

    def hits(outputs, targets):
        true = targets if targets.ndim == 1 else jnp.argmax(targets, axis=-1)
        _, top = jax.lax.top_k(outputs, k)
        return jnp.any(top == true[:, None], axis=-1)

    return _count_metric(f"top_{k}_accuracy", hits)


def _error_metric(name: str, error: Callable[[jax.Array], jax.Array]) -> Metric:
    """``sum(error(outputs - targets)) / number of real elements``."""

    def init(num_examples):
        del num_examples
        return CountState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))

    def update(acc, outputs, targets, mask):
        targets = jnp.reshape(targets, outputs.shape)
        per_row = jnp.sum(jnp.reshape(error(outputs - targets), (outputs.shape[0], -1)), axis=1)
        elements_per_row = outputs.size // outputs.shape[0]
        return CountState(
            acc.total + jnp.sum(jnp.where(mask, per_row, 0.0)),
            acc.count + jnp.sum(mask.astype(jnp.int32)) * elements_per_row,
        )

    return Metric(name, init, update, lambda acc: _ratio(acc.total, acc.count))


def _confusion_metric(
    name: str, num_classes: int, compute: Callable[[ConfusionState], jax.Array]
) -> Metric:
    """A metric computed from the accumulated (C, C) confusion matrix."""

    def init(num_examples):
        del num_examples
        return ConfusionState(
            jnp.zeros((num_classes, num_classes), jnp.int32), jnp.zeros((), bool)
        )

    def update(acc, outputs, targets, mask):
        single_logit = _is_single_logit(outputs)
        classes = 2 if single_logit else outputs.shape[-1]
        if classes != num_classes:
            raise ValueError(
                f"{name}: built for num_classes={num_classes} but the outputs {outputs.shape} "
                f"have {classes} classes — use get_metric({name!r}, num_classes={classes})"
            )
        predicted, true = _predicted_and_true(outputs, targets)
        matrix = acc.matrix.at[true, predicted].add(mask.astype(jnp.int32))
        return ConfusionState(matrix, acc.single_logit | single_logit)

    return Metric(name, init, update, compute)


def _per_class(matrix: jax.Array) -> dict[str, jax.Array]:
    """Per-class precision, recall and F1 from a confusion matrix, each (C,) float32."""
    true_positives = jnp.diag(matrix)
    predicted = jnp.sum(matrix, axis=0)
    actual = jnp.sum(matrix, axis=1)
    return {
        "precision": _ratio(true_positives, predicted),
        "recall": _ratio(true_positives, actual),
        # 2tp / (2tp + fp + fn) equals 2pr / (p + r) and is 0 when tp = 0, like sklearn.
        "f1": _ratio(2 * true_positives, predicted + actual),
    }


def _averaged(score: str) -> Callable[[ConfusionState], jax.Array]:
    """compute() of a macro (multi-class) or positive-class (single-logit) score."""

    def compute(acc):
        values = _per_class(acc.matrix)[score]
        present = (jnp.sum(acc.matrix, axis=0) + jnp.sum(acc.matrix, axis=1)) > 0
        macro = _ratio(jnp.sum(jnp.where(present, values, 0.0)), jnp.sum(present))
        return jnp.where(acc.single_logit, values[-1], macro)

    return compute


def _binary_scores(outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Positive-class scores (B,) float32 and labels (B,) bool for ``roc_auc``."""
    if _is_single_logit(outputs):
        scores = jnp.reshape(outputs, (-1,))
        labels = jnp.reshape(targets, (-1,)) > 0.5
    elif outputs.shape[-1] == 2:
        scores = outputs[:, 1] - outputs[:, 0]  # log-odds of class 1, monotone in p(1)
        labels = (targets if targets.ndim == 1 else jnp.argmax(targets, axis=-1)) == 1
    else:
        raise ValueError(
            f"roc_auc: binary only, got outputs of shape {outputs.shape} — "
            "use one logit per example (or two classes)"
        )
    return scores.astype(jnp.float32), labels


def mann_whitney_auc(scores: jax.Array, labels: jax.Array, valid: jax.Array) -> jax.Array:
    """Exact ROC AUC = P(score_pos > score_neg) + 0.5 P(tie), by average ranks.

    Args:
      scores: (N,) float.
      labels: (N,) bool, True for positives.
      valid: (N,) bool, entries to use.

    Returns:
      () float32, NaN when there are no positives or no negatives.
    """
    negatives = valid & ~labels
    num_negatives = jnp.sum(negatives)
    # Invalid/positive entries sort to the end as +inf; clamping the counts at
    # num_negatives discards them even when a real score is +inf.
    sorted_negatives = jnp.sort(jnp.where(negatives, scores, jnp.inf))
    below = jnp.minimum(jnp.searchsorted(sorted_negatives, scores, side="left"), num_negatives)
    at_or_below = jnp.minimum(
        jnp.searchsorted(sorted_negatives, scores, side="right"), num_negatives
    )
    wins = (below + at_or_below) / 2.0  # negatives beaten, ties count half
    positives = valid & labels
    num_positives = jnp.sum(positives)
    auc = jnp.sum(jnp.where(positives, wins / jnp.maximum(num_negatives, 1), 0.0)) / jnp.maximum(
        num_positives, 1
    )
    return jnp.where((num_positives > 0) & (num_negatives > 0), auc, jnp.nan).astype(jnp.float32)


def roc_auc() -> Metric:
    """Exact binary ROC AUC over the split (scikit-learn's ``roc_auc_score``).

    Scores are written into a buffer preallocated by ``init(num_examples)``; the
    AUC is computed once, at ``compute``, from all of them. ``num_examples`` must be
    at least the number of real examples, otherwise ``compute`` returns NaN.
    """

    def init(num_examples):
        return ScoreBufferState(
            jnp.zeros((num_examples,), jnp.float32),
            jnp.zeros((num_examples,), bool),
            jnp.zeros((), jnp.int32),
        )

    def update(acc, outputs, targets, mask):
        scores, labels = _binary_scores(outputs, targets)
        # A scatter with mode="drop" rather than dynamic_update_slice: the latter
        # clamps its start index, so a padded last batch that overruns the buffer
        # would overwrite earlier real scores. Masked rows go out of bounds and drop.
        slot = acc.count + jnp.cumsum(mask) - 1
        slot = jnp.where(mask, slot, acc.scores.shape[0])
        return ScoreBufferState(
            acc.scores.at[slot].set(scores, mode="drop"),
            acc.labels.at[slot].set(labels, mode="drop"),
            acc.count + jnp.sum(mask.astype(jnp.int32)),
        )

    def compute(acc):
        capacity = acc.scores.shape[0]
        valid = jnp.arange(capacity) < acc.count
        auc = mann_whitney_auc(acc.scores, acc.labels, valid)
        return jnp.where(acc.count <= capacity, auc, jnp.nan)

    return Metric("roc_auc", init, update, compute)


_CONFUSION_METRICS: dict[str, Callable[[ConfusionState], jax.Array]] = {
    "precision": _averaged("precision"),
    "recall": _averaged("recall"),
    "f1": _averaged("f1"),
    "precision_per_class": lambda acc: _per_class(acc.matrix)["precision"],
    "recall_per_class": lambda acc: _per_class(acc.matrix)["recall"],
    "f1_per_class": lambda acc: _per_class(acc.matrix)["f1"],
    "confusion_matrix": lambda acc: acc.matrix,
}

_SIMPLE_METRICS: dict[str, Callable[[], Metric]] = {
    "accuracy": accuracy,
    "roc_auc": roc_auc,
    "mse": lambda: _error_metric("mse", jnp.square),
    "mae": lambda: _error_metric("mae", jnp.abs),
}

_TOP_K = re.compile(r"top_?(\d+)_accuracy")


def get_metric(name: str, *, num_classes: int | None = None) -> Metric:
    """Builds a metric by name.

    Args:
      name: ``accuracy``, ``top_{k}_accuracy`` (e.g. ``top_5_accuracy`` or
        ``top5_accuracy``), ``precision``, ``recall``, ``f1`` (macro, or positive
        class for single-logit outputs), ``precision_per_class``,
        ``recall_per_class``, ``f1_per_class``, ``confusion_matrix``, ``roc_auc``,
        ``mse``, ``mae``.
      num_classes: C for the confusion-matrix metrics; ``None`` means a binary
        classifier (C = 2). Checked against the outputs at the first update.

    Raises:
      ValueError: unknown name (with a did-you-mean suggestion).
    """
    if name in _SIMPLE_METRICS:
        return _SIMPLE_METRICS[name]()
    if name in _CONFUSION_METRICS:
        return _confusion_metric(name, num_classes or 2, _CONFUSION_METRICS[name])
    top_k = _TOP_K.fullmatch(name)
    if top_k:
        return top_k_accuracy(int(top_k.group(1)))
    valid = [*_SIMPLE_METRICS, *_CONFUSION_METRICS, "top_{k}_accuracy"]
    raise ValueError(unknown_name_message("metric", name, valid))


def get_metrics(metrics, num_classes: int | None) -> tuple[Metric, ...]:
    """Metric objects for a list of names (see `get_metric`) or Metric objects (kept as they are)."""
    return tuple(m if isinstance(m, Metric) else get_metric(m, num_classes=num_classes) for m in metrics)


def infer_num_classes(output_shape) -> int | None:
    """C for a classifier whose per-example output is logits (..., C) with C > 1; None for one
    logit or for non-array (several) outputs."""
    if output_shape and all(isinstance(d, int) for d in output_shape) and output_shape[-1] > 1:
        return output_shape[-1]
    return None


def compute_all(metrics: list[Metric], accumulators: list[Any]) -> dict[str, jax.Array]:
    """``{metric.name: metric.compute(acc)}`` for matching lists of metrics and accumulators."""
    return {metric.name: metric.compute(acc) for metric, acc in zip(metrics, accumulators, strict=True)}
