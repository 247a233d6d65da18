"""fdl.metrics against hand-computed values and scikit-learn."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk

from fdl import metrics
from fdl.metrics import get_metric

SEED = 0
# Metrics are ratios of exact int32 counts, rounded once to float32.
TOL = dict(rtol=1e-6, atol=1e-6)


def one_shot(metric, outputs, targets):
    """The metric over one batch holding the whole split (jitted: eager dispatch is slow)."""
    outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
    mask = jnp.ones(len(outputs), bool)

    @jax.jit
    def run(outputs, targets, mask):
        return metric.compute(metric.update(metric.init(len(outputs)), outputs, targets, mask))

    return run(outputs, targets, mask)


def in_batches(metric, outputs, targets, sizes, *, pad_to=None, jit=False):
    """The metric over uneven batches, optionally padded with garbage rows to ``pad_to``."""
    update = jax.jit(metric.update) if jit else metric.update
    acc, start = metric.init(len(outputs)), 0
    rng = np.random.default_rng(SEED)
    for size in sizes:
        batch_outputs, batch_targets = outputs[start : start + size], targets[start : start + size]
        mask = np.ones(size, bool)
        if pad_to is not None:
            padding = pad_to - size
            garbage_outputs = rng.normal(size=(padding, *outputs.shape[1:])) * 100
            garbage_targets = rng.integers(0, 2, size=(padding, *targets.shape[1:]))
            batch_outputs = np.concatenate([batch_outputs, garbage_outputs.astype(outputs.dtype)])
            batch_targets = np.concatenate([batch_targets, garbage_targets.astype(targets.dtype)])
            mask = np.concatenate([mask, np.zeros(padding, bool)])
        acc = update(acc, jnp.asarray(batch_outputs), jnp.asarray(batch_targets), jnp.asarray(mask))
        start += size
    assert start == len(outputs)
    return metric.compute(acc)


@functools.lru_cache
def multiclass_data(num_examples=103, num_classes=5):
    """Random logits and labels; the last class is never true nor predicted.

    sklearn's macro average skips such absent classes; averaging over all would differ.
    """
    rng = np.random.default_rng(SEED)
    logits = rng.normal(size=(num_examples, num_classes)).astype(np.float32)
    logits[:, -1] -= 10.0
    labels = rng.integers(0, num_classes - 1, size=num_examples).astype(np.int32)
    return logits, labels


@functools.lru_cache
def binary_data(num_examples=97):
    """Random single logits with many ties (rounded), and 0/1 labels."""
    rng = np.random.default_rng(SEED + 1)
    logits = np.round(rng.normal(size=num_examples), 1).astype(np.float32)
    labels = (rng.random(num_examples) < 0.4).astype(np.float32)
    return logits, labels


# ---- hand-computed values on tiny arrays ----------------------------------------------------

TINY_LOGITS = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.0, 2.0, 1.0]], np.float32)
TINY_LABELS = np.array([0, 1, 1, 2], np.int32)  # predictions 0, 1, 2, 1: two right


def test_tiny_multiclass_by_hand():
    assert np.allclose(one_shot(get_metric("accuracy"), TINY_LOGITS, TINY_LABELS), 0.5)
    # true 1 (row 2) has logits [1, 0, 2]: logit of class 1 is the smallest -> misses top-2.
    assert np.allclose(one_shot(get_metric("top_2_accuracy"), TINY_LOGITS, TINY_LABELS), 0.75)
    matrix = one_shot(get_metric("confusion_matrix", num_classes=3), TINY_LOGITS, TINY_LABELS)
    assert np.array_equal(matrix, [[1, 0, 0], [0, 1, 1], [0, 1, 0]])  # rows true, cols predicted
    precision = one_shot(get_metric("precision_per_class", num_classes=3), TINY_LOGITS, TINY_LABELS)
    recall = one_shot(get_metric("recall_per_class", num_classes=3), TINY_LOGITS, TINY_LABELS)
    f1 = one_shot(get_metric("f1_per_class", num_classes=3), TINY_LOGITS, TINY_LABELS)
    assert np.allclose(precision, [1.0, 0.5, 0.0]) and np.allclose(recall, [1.0, 0.5, 0.0])
    assert np.allclose(f1, [1.0, 0.5, 0.0])
    assert np.allclose(one_shot(get_metric("f1", num_classes=3), TINY_LOGITS, TINY_LABELS), 0.5)


def test_zero_division_is_zero_for_a_class_never_predicted():
    logits = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    precision = one_shot(get_metric("precision_per_class", num_classes=3), logits, np.array([0, 1]))
    assert np.array_equal(precision, [0.5, 0.0, 0.0])


def test_tiny_binary_by_hand():
    logits = np.array([2.0, -1.0, 0.5, -0.5, 0.5], np.float32)  # predictions 1 0 1 0 1
    labels = np.array([1, 0, 0, 1, 1], np.float32)  # tp 2, fp 1, fn 1, tn 1
    for name, expected in [("accuracy", 3 / 5), ("precision", 2 / 3), ("recall", 2 / 3), ("f1", 2 / 3)]:
        assert np.allclose(one_shot(get_metric(name), logits, labels), expected), name
    # positives 2.0, 0.5, -0.5 vs negatives -1.0, 0.5: wins 2 + 1.5 + 1 of 6 pairs.
    assert np.allclose(one_shot(get_metric("roc_auc"), logits, labels), 4.5 / 6)
    assert np.allclose(one_shot(get_metric("roc_auc"), logits[:, None], labels[:, None]), 4.5 / 6)


def test_regression_metrics_by_hand():
    outputs = np.array([[1.0], [2.0], [4.0]], np.float32)
    targets = np.array([0.0, 2.0, 1.0], np.float32)  # errors 1, 0, 3
    assert np.allclose(one_shot(get_metric("mse"), outputs, targets), 10 / 3)
    assert np.allclose(one_shot(get_metric("mae"), outputs, targets), 4 / 3)


# ---- scikit-learn on random data ------------------------------------------------------------


def test_multiclass_against_sklearn():
    logits, labels = multiclass_data()
    predicted = logits.argmax(1)
    precision, recall, f1, _ = sk.precision_recall_fscore_support(
        labels, predicted, average="macro", zero_division=0
    )
    expected = {
        "accuracy": sk.accuracy_score(labels, predicted),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "top_3_accuracy": sk.top_k_accuracy_score(labels, logits, k=3, labels=range(5)),
    }
    for name, value in expected.items():
        assert np.allclose(one_shot(get_metric(name, num_classes=5), logits, labels), value, **TOL), name
    per_class = sk.precision_recall_fscore_support(labels, predicted, labels=range(5), zero_division=0)
    for name, value in zip(["precision", "recall", "f1"], per_class):
        metric = get_metric(f"{name}_per_class", num_classes=5)
        assert np.allclose(one_shot(metric, logits, labels), value, **TOL), name
    matrix = one_shot(get_metric("confusion_matrix", num_classes=5), logits, labels)
    assert np.array_equal(matrix, sk.confusion_matrix(labels, predicted, labels=range(5)))


def test_binary_against_sklearn_with_ties():
    logits, labels = binary_data()
    assert len(np.unique(logits)) < len(logits)  # ties exercised
    predicted = logits > 0
    assert np.allclose(one_shot(get_metric("roc_auc"), logits, labels), sk.roc_auc_score(labels, logits), **TOL)
    for name, function in [("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)]:
        assert np.allclose(one_shot(get_metric(name), logits, labels), function(labels, predicted), **TOL), name


def test_roc_auc_from_two_class_logits_and_one_hot_targets():
    logits, labels = binary_data()
    two_class = np.stack([np.zeros_like(logits), logits], axis=1)
    one_hot = np.eye(2, dtype=np.float32)[labels.astype(int)]
    assert np.allclose(one_shot(get_metric("roc_auc"), two_class, one_hot), sk.roc_auc_score(labels, logits), **TOL)


def test_roc_auc_is_nan_without_both_classes_or_when_buffer_overflows():
    assert np.isnan(one_shot(get_metric("roc_auc"), np.array([0.1, 0.2]), np.array([1.0, 1.0])))
    metric = get_metric("roc_auc")
    acc = metric.init(2)
    acc = metric.update(acc, jnp.array([0.1, 0.2, 0.3]), jnp.array([0.0, 1.0, 1.0]), jnp.ones(3, bool))
    assert np.isnan(metric.compute(acc))


# ---- accumulation: uneven batches, padding, jit ---------------------------------------------

ALL_CLASSIFICATION = ["accuracy", "top_2_accuracy", "precision", "recall", "f1", "precision_per_class",
                      "recall_per_class", "f1_per_class", "confusion_matrix"]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", ALL_CLASSIFICATION)
def test_uneven_padded_batches_equal_one_shot(name, jit):
    logits, labels = multiclass_data()
    metric = get_metric(name, num_classes=5)
    expected = one_shot(metric, logits, labels)
    # 103 = 40 + 40 + 23; batches padded to 40 with garbage rows that the mask excludes.
    assert np.allclose(in_batches(metric, logits, labels, [40, 40, 23], pad_to=40, jit=jit), expected, **TOL)
    assert np.allclose(in_batches(metric, logits, labels, [7, 50, 46]), expected, **TOL)


@pytest.mark.parametrize("name", ["roc_auc", "accuracy", "f1", "mse", "mae"])
def test_binary_and_regression_padded_batches_equal_one_shot(name):
    logits, labels = binary_data()
    metric = get_metric(name)
    expected = one_shot(metric, logits, labels)
    assert np.allclose(in_batches(metric, logits, labels, [32, 32, 33], pad_to=33, jit=True), expected, **TOL)


def test_metric_runs_inside_lax_scan():
    logits, labels = multiclass_data()
    metric = get_metric("f1", num_classes=5)
    batches = (jnp.asarray(logits[:100]).reshape(4, 25, 5), jnp.asarray(labels[:100]).reshape(4, 25))

    @jax.jit
    def evaluate(batches):
        def step(acc, batch):
            outputs, targets = batch
            return metric.update(acc, outputs, targets, jnp.ones(25, bool)), None

        acc, _ = jax.lax.scan(step, metric.init(100), batches)
        return metric.compute(acc)

    assert np.allclose(evaluate(batches), one_shot(metric, logits[:100], labels[:100]), **TOL)


def test_compute_all():
    logits, labels = multiclass_data()
    chosen = [get_metric("accuracy"), get_metric("confusion_matrix", num_classes=5)]
    mask = jnp.ones(len(labels), bool)
    accumulators = [m.update(m.init(len(labels)), jnp.asarray(logits), jnp.asarray(labels), mask) for m in chosen]
    values = metrics.compute_all(chosen, accumulators)
    assert set(values) == {"accuracy", "confusion_matrix"} and values["confusion_matrix"].shape == (5, 5)


# ---- errors ---------------------------------------------------------------------------------


def test_get_metric_names_and_errors():
    assert get_metric("top5_accuracy").name == "top_5_accuracy"
    with pytest.raises(ValueError, match="unknown metric 'acuracy' — did you mean 'accuracy'\\? valid: "):
        get_metric("acuracy")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        get_metric("top_0_accuracy")


def test_wrong_num_classes_and_non_binary_roc_auc_raise():
    logits, labels = multiclass_data()
    with pytest.raises(ValueError, match=r"f1: built for num_classes=2 but the outputs \(103, 5\) have 5 classes"):
        one_shot(get_metric("f1"), logits, labels)
    with pytest.raises(ValueError, match="roc_auc: binary only"):
        one_shot(get_metric("roc_auc"), logits, labels)
