"""Held-out splits: a validation split carved from train, and k-fold indices.

Both are deterministic functions of `seed` (numpy's PCG64 via
`np.random.default_rng`), run once on the host before training.
"""
import dataclasses
from collections.abc import Mapping

import numpy as np

from fdl.data.dataset import Dataset, Split

__all__ = ["train_val_split", "kfold_indices"]


def train_val_split(dataset: Dataset, fraction: float = 0.1, *, stratify: bool = True,
                    seed: int = 0) -> Dataset:
    """Moves a random `fraction` of the training examples into a new val split.

    The val split gets `round(fraction * n)` examples. With `stratify` (and
    class labels) every class contributes floor or ceil of `fraction` times its
    count, allotted by largest remainder so the total is exact; class
    proportions in train and val then match to within one example per class.
    For regression or unlabeled data `stratify` is ignored. Both splits keep
    the original relative order of their examples (the epoch shuffle reorders).

    Args:
        dataset: A dataset without a val split.
        fraction: Share of train that moves to val, in (0, 1).
        stratify: Keep class proportions (classification only).
        seed: Seed of the split.

    Returns:
        A copy of `dataset` with the smaller train split and the new val split.

    Raises:
        ValueError: `dataset` already has a val split, `fraction` is outside
            (0, 1), or it would leave train or val empty.
    """
    where = f"train_val_split(dataset {dataset.name!r})"
    if dataset.val is not None:
        raise ValueError(f"{where}: the dataset already has a val split")
    if not 0 < fraction < 1:
        raise ValueError(f"{where}: fraction must be in (0, 1), got {fraction}")
    num_examples = dataset.train.num_examples
    num_val = round(fraction * num_examples)
    if not 0 < num_val < num_examples:
        raise ValueError(f"{where}: fraction={fraction} of {num_examples} examples gives "
                         f"{num_val} val examples — use a fraction that leaves both splits "
                         "non-empty")
    rng = np.random.default_rng(seed)
    labels = dataset.train.y if stratify and dataset.num_classes is not None else None
    if labels is None:
        val_index = rng.choice(num_examples, num_val, replace=False)
    else:
        val_index = _stratified_choice(rng, labels, num_val)
    in_val = np.zeros(num_examples, bool)
    in_val[val_index] = True
    return dataclasses.replace(dataset, train=_take(dataset.train, ~in_val),
                               val=_take(dataset.train, in_val))


def _take(split: Split, mask: np.ndarray) -> Split:
    x = {name: leaf[mask] for name, leaf in split.x.items()} if isinstance(split.x, Mapping) else split.x[mask]
    return Split(x, None if split.y is None else split.y[mask])


def _stratified_choice(rng: np.random.Generator, labels: np.ndarray, num_val: int) -> np.ndarray:
    """Draws `num_val` indices with per-class counts proportional to class sizes.

    Args:
        rng: Random generator.
        labels: (n,) int class labels.
        num_val: Total number of indices to draw.

    Returns:
        (num_val,) distinct indices into `labels`.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * (num_val / labels.shape[0])
    per_class = np.floor(quotas).astype(int)
    # largest remainder: the classes closest to their next example get one more
    leftovers = np.argsort(-(quotas - per_class), kind="stable")[: num_val - per_class.sum()]
    per_class[leftovers] += 1
    return np.concatenate([rng.choice(np.flatnonzero(labels == label), count, replace=False)
                           for label, count in zip(classes, per_class)])


def kfold_indices(num_examples: int, k: int, *, seed: int = 0,
                  labels: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Index pairs for k-fold cross-validation.

    Examples are shuffled, then dealt to folds round-robin, so fold sizes differ
    by at most one. With `labels` the deal runs class by class, so each class is
    spread over the folds as evenly as possible (stratified k-fold).

    Args:
        num_examples: n, the number of examples.
        k: Number of folds, 2 <= k <= n.
        seed: Seed of the shuffle.
        labels: Optional (n,) int class labels for stratification.

    Returns:
        k pairs (train_index, val_index) of sorted int64 indices; the val
        indices of the k folds partition range(n).

    Raises:
        ValueError: k outside [2, n], or labels of the wrong length.
    """
    if not 2 <= k <= num_examples:
        raise ValueError(f"kfold_indices: k must be in [2, num_examples={num_examples}], got {k}")
    order = np.random.default_rng(seed).permutation(num_examples)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (num_examples,):
            raise ValueError(f"kfold_indices: labels have shape {labels.shape}, expected "
                             f"({num_examples},)")
        order = order[np.argsort(labels[order], kind="stable")]  # class by class, shuffled within
    fold_of = np.empty(num_examples, int)
    fold_of[order] = np.arange(num_examples) % k
    return [(np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold))
            for fold in range(k)]
