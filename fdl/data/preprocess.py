"""Preprocessing fitted on the training split and applied to every split.

Fitted statistics are NamedTuples of numpy arrays, so a run saves them beside
its checkpoint (`stats._asdict()`) and `predict` applies the same transform
(`transform(method, stats, x)`). Statistics are per feature: computed over the
example axis only, so they have the per-example feature shape.

Constant features: both transforms divide by a scale that is set to 1 where the
feature's spread is below `eps` (scikit-learn's `StandardScaler` rule), so a
constant feature maps to 0 instead of dividing by zero.
"""
import dataclasses
from typing import NamedTuple

import numpy as np

from fdl.data.dataset import Dataset, Split
from fdl.errors import unknown_name_message

__all__ = ["preprocess", "transform", "one_hot", "METHODS", "StandardizeStats", "fit_standardize",
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


def transform(method: str, stats: NamedTuple, x: np.ndarray) -> np.ndarray:
    """Applies fitted statistics by method name (what `predict` calls).

    Args:
        method: A key of `METHODS`.
        stats: Statistics returned by `preprocess` or the method's fit function.
        x: (n, *feature_shape) features.

    Returns:
        (n, *feature_shape) float32 transformed features.
    """
    return _method(method)[1](stats, x)


def preprocess(dataset: Dataset, method: str, **fit_kwargs) -> tuple[Dataset, NamedTuple]:
    """Fits `method` on the training features and applies it to every split.

    Labels are unchanged. Fitting on train only keeps val/test unseen: their
    transformed statistics differ from train's (mean 0, std 1 for "standardize").

    Args:
        dataset: The dataset to transform.
        method: "standardize" or "min_max".
        **fit_kwargs: Passed to the fit function, e.g. `eps=`.

    Returns:
        (transformed dataset, fitted statistics). Save `stats._asdict()` with the
        run; rebuild with e.g. `StandardizeStats(**saved)`.

    Example:
        >>> ds, stats = preprocess(fdl.data.load("mnist1d"), "standardize")
        >>> np.allclose(ds.train.x.mean(0), 0, atol=1e-5), np.allclose(ds.train.x.std(0), 1, atol=1e-4)
        (True, True)
        >>> x_new = transform("standardize", stats, x_test)  # raw inputs, at predict time
    """
    fit, apply = _method(method)
    stats = fit(dataset.train.x, **fit_kwargs)
    transformed = {name: Split(apply(stats, split.x), split.y)
                   for name, split in dataset.splits().items()}
    return dataclasses.replace(dataset, **transformed), stats


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
