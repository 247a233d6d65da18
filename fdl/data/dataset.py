"""The in-memory dataset containers: `Split` (one split's arrays) and `Dataset`.

Arrays stay numpy on the host; the training engine moves batches to the device.
Constructing these containers does not validate the arrays: the loaders in
`fdl.data.sources` (and `from_arrays`) run `fdl.data.validate` before building
them, so a `Dataset` obtained from a loader always holds float32 features,
int32 class labels (or float32 targets) and finite values.
"""
import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from fdl.typing import Shape

SPLIT_NAMES = ("train", "val", "test")
__all__ = ["Dataset", "Split", "as_arrays", "as_examples", "SPLIT_NAMES"]


class Split(NamedTuple):
    """One split: arrays with a leading example axis of length n.

    Attributes:
        x: (n, *feature_shape) float32 features.
        y: (n,) int32 class labels, (n, *target_shape) float32 regression
            targets, or None for unlabeled data.
    """

    x: np.ndarray
    y: np.ndarray | None

    @property
    def num_examples(self) -> int:
        """n, the length of the leading example axis (`len(split)` is the field count, 2)."""
        return self.x.shape[0]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named dataset with up to three splits and its metadata.

    Attributes:
        name: Used in error messages and run records, e.g. "mnist1d".
        train: The training split.
        val: Validation split, or None (see `fdl.data.train_val_split`).
        test: Test split, or None.
        num_classes: Number of classes for classification; None for regression
            or unlabeled data.
        class_names: Optional human-readable name per class.
        feature_shape: Per-example feature shape, e.g. (40,) or (28, 28, 1);
            derived from `train.x` when left empty.
        extras: Dataset-level arrays that are not per-example splits, e.g.
            mnist1d's time grid `t: (40,)`.
    """

    name: str
    train: Split
    val: Split | None = None
    test: Split | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    feature_shape: Shape = ()
    extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.feature_shape:
            # frozen dataclass: object.__setattr__ is the documented way to derive a field.
            object.__setattr__(self, "feature_shape", tuple(self.train.x.shape[1:]))

    def splits(self) -> dict[str, Split]:
        """Returns the splits that are present, in the order train, val, test."""
        present = {name: getattr(self, name) for name in SPLIT_NAMES}
        return {name: split for name, split in present.items() if split is not None}


def as_arrays(data, role: str = "train") -> tuple:
    """(x, y) from a (x, y) pair, a Split (or anything with .x and .y), or a Dataset's `role` split.

    Raises:
      TypeError: `data` is none of these (the message names `role`).
    """
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, role) and hasattr(getattr(data, role), "x"):
        split = getattr(data, role)
        return split.x, split.y
    raise TypeError(f"{role}: expected (x, y) arrays, an fdl.data Split or Dataset, got "
                    f"{type(data).__name__}")


def as_examples(data, role: str = "train"):
    """The pytree of arrays (a leading example axis each) that `data` holds for `role`.

    A Dataset gives its `role` split as `(x, y)`; a Split or anything with .x
    and .y gives `(x, y)`; a tuple, a list, a dict or a bare array is the batch
    structure itself (`{"tokens": ..., "mask": ...}` stays a dict).

    Raises:
      TypeError: `data` is none of these (the message names `role`).
    """
    if isinstance(data, Dataset):
        split = getattr(data, role, None)
        if split is None:
            raise TypeError(f"{role}: the dataset {data.name!r} has no {role} split")
        return (split.x, split.y)
    if hasattr(data, "x") and hasattr(data, "y"):
        return (data.x, data.y)
    if isinstance(data, (tuple, list)):
        return tuple(data)
    if isinstance(data, Mapping) or hasattr(data, "shape"):
        return data
    raise TypeError(f"{role}: expected arrays with a leading example axis — (x, y), a dict, a bare "
                    f"array, an fdl.data Split or Dataset — got {type(data).__name__}")
