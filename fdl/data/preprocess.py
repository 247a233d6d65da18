"""Preprocessing fitted on the training split and applied to every split.

Fitted statistics are NamedTuples of numpy arrays, so a run saves them beside
its checkpoint (`stats._asdict()`) and `predict` applies the same transform
(`transform(method, stats, x)`). Statistics are per feature: computed over the
example axis only, so they have the per-example feature shape.

Constant features: both transforms divide by a scale that is set to 1 where the
feature's spread is below `eps` (scikit-learn's `StandardScaler` rule), so a
constant feature maps to 0 instead of dividing by zero.

A model's dict of inputs (a split `Split({"a": ..., "b": ...}, y)`) is fitted per
input on train: the statistics are a dict input name -> NamedTuple, saved as the
flat arrays `stats_arrays` gives (`a/mean`, `a/scale`, `b/mean`, ...) and read
back with `stats_from_arrays`.
"""
import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from fdl.data.dataset import Dataset, Split
from fdl.errors import unknown_name_message

__all__ = ["preprocess", "transform", "one_hot", "METHODS", "stats_arrays", "stats_from_arrays", "stats_shapes", "StandardizeStats", "fit_standardize",
           "apply_standardize", "invert_standardize", "MinMaxStats", "fit_min_max",
           "apply_min_max", "invert_min_max"]


class StandardizeStats(NamedTuple):
    """Statistics of `x -> (x - mean) / scale`.

    Attributes:
        mean: (*feature_shape) float32 training mean per feature.
        scale: (*feature_shape) float32 training standard deviation per feature
            (population, ddof=0), 1 where it is below eps.
    """

    mean: np.ndarray
    scale: np.ndarray


class MinMaxStats(NamedTuple):
    """Statistics of `x -> (x - minimum) / scale`, mapping train to [0, 1].

    Attributes:
        minimum: (*feature_shape) float32 training minimum per feature.
        scale: (*feature_shape) float32 training max - min per feature, 1 where
            it is below eps.
    """

    minimum: np.ndarray
    scale: np.ndarray


def _safe_scale(spread: np.ndarray, eps: float) -> np.ndarray:
    return np.where(spread < eps, 1.0, spread).astype(np.float32)


def fit_standardize(x: np.ndarray, *, eps: float = 1e-8) -> StandardizeStats:
    """Fits per-feature mean and standard deviation.

    Args:
        x: (n, *feature_shape) training features.
        eps: Standard deviations below eps count as constant (scale 1).

    Returns:
        The fitted `StandardizeStats`, computed in float64 and stored float32.
    """
    x = np.asarray(x, np.float64)
    return StandardizeStats(x.mean(axis=0).astype(np.float32), _safe_scale(x.std(axis=0), eps))


def apply_standardize(stats: StandardizeStats, x: np.ndarray) -> np.ndarray:
    """Returns (n, *feature_shape) float32 `(x - mean) / scale`."""
    return ((x - stats.mean) / stats.scale).astype(np.float32)


def invert_standardize(stats: StandardizeStats, x: np.ndarray) -> np.ndarray:
    """Inverse of `apply_standardize`: float32 `x * scale + mean`."""
    return (x * stats.scale + stats.mean).astype(np.float32)


def fit_min_max(x: np.ndarray, *, eps: float = 1e-8) -> MinMaxStats:
    """Fits per-feature minimum and range.

    Args:
        x: (n, *feature_shape) training features.
        eps: Ranges below eps count as constant (scale 1).

    Returns:
        The fitted `MinMaxStats`.
    """
    x = np.asarray(x, np.float64)
    minimum = x.min(axis=0)
    return MinMaxStats(minimum.astype(np.float32), _safe_scale(x.max(axis=0) - minimum, eps))


def apply_min_max(stats: MinMaxStats, x: np.ndarray) -> np.ndarray:
    """Returns (n, *feature_shape) float32 `(x - minimum) / scale`, in [0, 1] on train."""
    return ((x - stats.minimum) / stats.scale).astype(np.float32)


def invert_min_max(stats: MinMaxStats, x: np.ndarray) -> np.ndarray:
    """Inverse of `apply_min_max`: float32 `x * scale + minimum`."""
    return (x * stats.scale + stats.minimum).astype(np.float32)


METHODS = {"standardize": (fit_standardize, apply_standardize),
           "min_max": (fit_min_max, apply_min_max)}


def _method(name: str):
    if name not in METHODS:
        raise ValueError(unknown_name_message("preprocessing", name, METHODS))
    return METHODS[name]


def transform(method: str, stats, x):
    """Applies fitted statistics by method name (what `predict` calls).

    Args:
        method: A key of `METHODS`.
        stats: Statistics returned by `preprocess` or the method's fit function;
            a dict input name -> statistics for a model's dict of inputs.
        x: (n, *feature_shape) features; a dict input name -> such an array with
            a dict of statistics.

    Returns:
        (n, *feature_shape) float32 transformed features (a dict of them for a dict).

    Raises:
        ValueError: a dict x whose inputs are not those the statistics were fitted on.
    """
    apply = _method(method)[1]
    if not isinstance(stats, Mapping):
        return apply(stats, x)
    if not isinstance(x, Mapping) or set(x) != set(stats):
        given = list(x) if isinstance(x, Mapping) else f"one array of shape {x.shape}"
        raise ValueError(f"{method}: x has inputs {given}, the statistics were fitted on inputs "
                         f"{list(stats)} — give one array per input")
    return {name: apply(stats[name], leaf) for name, leaf in x.items()}


def _fit(method: str, x, **fit_kwargs):
    """`method`'s statistics of training features x: an array, or a dict of inputs (fitted per input)."""
    fit = _method(method)[0]
    if isinstance(x, Mapping):
        return {name: fit(leaf, **fit_kwargs) for name, leaf in x.items()}
    return fit(x, **fit_kwargs)


def preprocess(dataset: Dataset, method: str, **fit_kwargs) -> tuple[Dataset, NamedTuple]:
    """Fits `method` on the training features and applies it to every split.

    Labels are unchanged. Fitting on train only keeps val/test unseen: their
    transformed statistics differ from train's (mean 0, std 1 for "standardize").
    A model's dict of inputs is fitted and transformed per input.

    Args:
        dataset: The dataset to transform.
        method: "standardize" or "min_max".
        **fit_kwargs: Passed to the fit function, e.g. `eps=`.

    Returns:
        (transformed dataset, fitted statistics — a dict input name -> statistics
        for a dict of inputs). Save `stats_arrays(stats)` with the run; rebuild
        with `stats_from_arrays(StandardizeStats, saved)`.

    Raises:
        ValueError: an unknown method, or a dict split without labels (an
            objective's examples, e.g. token ids, are not features to rescale).

    Example:
        >>> ds, stats = preprocess(fdl.data.load("mnist1d"), "standardize")
        >>> np.allclose(ds.train.x.mean(0), 0, atol=1e-5), np.allclose(ds.train.x.std(0), 1, atol=1e-4)
        (True, True)
        >>> x_new = transform("standardize", stats, x_test)  # raw inputs, at predict time
    """
    train = dataset.train
    if isinstance(train.x, Mapping) and train.y is None:
        raise ValueError(f"{method}: dataset {dataset.name!r} holds examples {list(train.x)} for an objective, "
                         "not features of a model — drop the preprocessing")
    stats = _fit(method, train.x, **fit_kwargs)
    transformed = {name: Split(transform(method, stats, split.x), split.y)
                   for name, split in dataset.splits().items()}
    return dataclasses.replace(dataset, **transformed), stats


def stats_arrays(stats) -> dict[str, np.ndarray]:
    """Fitted statistics as flat named arrays for an .npz: `{"mean": ..., "scale": ...}`, or for a dict
    of inputs `{"a/mean": ..., "a/scale": ..., "b/mean": ...}`."""
    if isinstance(stats, Mapping):
        return {f"{name}/{field}": np.asarray(value) for name, part in stats.items()
                for field, value in part._asdict().items()}
    return {field: np.asarray(value) for field, value in stats._asdict().items()}


def stats_from_arrays(stats_type: type, arrays: Mapping[str, np.ndarray]):
    """The statistics `stats_arrays` flattened: a `stats_type` (e.g. StandardizeStats), or a dict
    input name -> one when the keys are `input/field`."""
    if not any("/" in key for key in arrays):
        return stats_type(**arrays)
    inputs = dict.fromkeys(key.rsplit("/", 1)[0] for key in arrays)
    return {name: stats_type(**{field: arrays[f"{name}/{field}"] for field in stats_type._fields})
            for name in inputs}


def stats_shapes(stats_type: type, input_shape) -> dict[str, tuple]:
    """The flat arrays (`stats_arrays`'s names) and shapes `stats_type` has for inputs of
    `input_shape`: a per-example shape, or a dict input name -> shape."""
    if isinstance(input_shape, Mapping):
        return {f"{name}/{field}": tuple(shape) for name, shape in input_shape.items()
                for field in stats_type._fields}
    return {field: tuple(input_shape) for field in stats_type._fields}


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot encodes class labels.

    Args:
        labels: (n,) int class indices in [0, num_classes).
        num_classes: Number of classes.

    Returns:
        (n, num_classes) float32 rows with a single 1.

    Raises:
        ValueError: a label outside [0, num_classes) (names the first index).
    """
    labels = np.asarray(labels)
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        index = int(np.argmax(outside))
        raise ValueError(f"one_hot: labels[{index}] = {labels[index]} is outside "
                         f"[0, {num_classes})")
    return np.eye(num_classes, dtype=np.float32)[labels]
