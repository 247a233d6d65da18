"""The in-memory dataset containers: `Split` (one split's arrays) and `Dataset`.

Arrays stay numpy on the host; the training engine moves batches to the device.
A split holds either `(x, y)` arrays; or, for objectives that read named arrays,
a dict of them as `x` with `y=None` — e.g. the text loader's
`Split({"tokens": (n, context + 1) int32, "mask": (n, context + 1) bool})`; or,
for a model that takes a dict of inputs (Keras' `model.fit({"a": xa, "b": xb}, y)`),
a dict x with labels y: `Split({"a": (n, 2), "b": (n, 4)}, (n,) int32)`, whose
batch is `(x_dict, y)`.

Constructing these containers does not validate the values: the loaders in
`fdl.data.sources` (and `from_arrays`) run `fdl.data.validate` before building
them, so a `Dataset` obtained from a loader always holds float32 features,
int32 class labels (or float32 targets) and finite values. One structural check
runs when a `Dataset` is built: the leaves of a dict split must share one
leading length, and with labels every split has the train split's inputs
(shapes only, no pass over the values).
"""
import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from fdl.data.validate import check_dict_split
from fdl.typing import Shape

SPLIT_NAMES = ("train", "val", "test")
__all__ = ["Dataset", "Split", "as_arrays", "as_examples", "SPLIT_NAMES"]


class Split(NamedTuple):
    """One split: arrays with a leading example axis of length n.

    Attributes:
        x: (n, *feature_shape) float32 features; or a dict of arrays, each
            (n, ...): with `y` None, the examples an objective reads by name,
            e.g. `{"tokens": (n, T) int32, "mask": (n, T) bool}`; with `y`, a
            model's dict of inputs, e.g. `{"a": (n, 2) float32, "b": (n, 4) float32}`.
        y: (n,) int32 class labels, (n, *target_shape) float32 regression
            targets, or None for unlabeled data (and for an objective's dict `x`).
    """

    x: Any
    y: np.ndarray | None = None

    @property
    def num_examples(self) -> int:
        """n, the length of the leading example axis (`len(split)` is the field count, 2)."""
        return int(jax.tree_util.tree_leaves(self.x)[0].shape[0])

    @property
    def examples(self):
        """The batch structure the engine slices: the dict of a dict split without labels, else
        `(x, y)` (x a dict for a model's dict of inputs)."""
        return self.x if isinstance(self.x, Mapping) and self.y is None else (self.x, self.y)


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
            derived from `train.x` when left empty. For a dict of inputs with
            labels it is a dict of them, derived likewise (`{"a": (2,), "b": (4,)}`).
            For dict splits without labels it is the model's per-example input
            shape, which the loader sets (the text loader: `(context,)`, the
            tokens a window feeds the model).
        extras: Dataset-level arrays that are not per-example splits, e.g.
            mnist1d's time grid `t: (40,)`.
    """

    name: str
    train: Split
    val: Split | None = None
    test: Split | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    feature_shape: Shape | Mapping[str, Shape] = ()
    extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # frozen dataclass: object.__setattr__ is the documented way to derive a field.
        if not self.feature_shape and hasattr(self.train.x, "shape"):
            object.__setattr__(self, "feature_shape", tuple(self.train.x.shape[1:]))
        elif not self.feature_shape and isinstance(self.train.x, Mapping) and self.train.y is not None:
            object.__setattr__(self, "feature_shape", {name: tuple(np.shape(leaf)[1:])
                                                       for name, leaf in self.train.x.items()})
        for name, split in self.splits().items():
            if isinstance(split.x, Mapping):  # raised here, not first in fit (shapes only)
                check_dict_split(self.name, name, split, self.feature_shape, finite=False)

    def splits(self) -> dict[str, Split]:
        """Returns the splits that are present, in the order train, val, test."""
        present = {name: getattr(self, name) for name in SPLIT_NAMES}
        return {name: split for name, split in present.items() if split is not None}


def _xy(split, role: str) -> tuple:  # x may be a model's dict of inputs, with its labels
    if isinstance(split.x, Mapping) and split.y is None:
        raise TypeError(f"{role}: the split holds a dict of examples ({', '.join(map(repr, split.x))}), not "
                        "(x, y) arrays — train on it with an objective that reads them, e.g. "
                        "objective=fdl.objectives.masked_sequence_cross_entropy()")
    return split.x, split.y


def as_arrays(data, role: str = "train") -> tuple:
    """(x, y) from a (x, y) pair, a Split (or anything with .x and .y), or a Dataset's `role` split.

    x may be a model's dict of inputs (a split of a dict x with labels, or
    `({"a": xa, "b": xb}, y)`).

    Raises:
      TypeError: `data` is none of these, or a split holding a dict of examples
        without labels (an objective's; the message names `role`).
    """
    if hasattr(data, "x") and hasattr(data, "y"):
        return _xy(data, role)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, role) and hasattr(getattr(data, role), "x"):
        return _xy(getattr(data, role), role)
    raise TypeError(f"{role}: expected (x, y) arrays, an fdl.data Split or Dataset, got "
                    f"{type(data).__name__}")


def as_examples(data, role: str = "train"):
    """The pytree of arrays (a leading example axis each) that `data` holds for `role`.

    A Dataset gives its `role` split's `Split.examples`: `(x, y)`, or the dict
    of a dict split; a Split likewise, and anything else with .x and .y gives
    `(x, y)`; a tuple, a list, a dict or a bare array is the batch structure
    itself (`{"tokens": ..., "mask": ...}` stays a dict).

    Raises:
      TypeError: `data` is none of these (the message names `role`).
    """
    if isinstance(data, Dataset):
        split = getattr(data, role, None)
        if split is None:
            raise TypeError(f"{role}: the dataset {data.name!r} has no {role} split")
        return split.examples
    if isinstance(data, Split):
        return data.examples
    if hasattr(data, "x") and hasattr(data, "y"):
        return (data.x, data.y)
    if isinstance(data, (tuple, list)):
        return tuple(data)
    if isinstance(data, Mapping) or hasattr(data, "shape"):
        return data
    raise TypeError(f"{role}: expected arrays with a leading example axis — (x, y), a dict, a bare "
                    f"array, an fdl.data Split or Dataset — got {type(data).__name__}")
