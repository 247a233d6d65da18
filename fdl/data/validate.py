"""Load-time checks and dtype conversion for datasets.

Every loader (and `from_arrays`) passes its `Dataset` through `validate_dataset`,
so bad data fails when it is loaded, not three epochs into training. Errors are
one-line `ValueError`s naming the dataset, the split, the array and the first
bad index, e.g. ``dataset 'arrays' train.y[7] = 10 is outside [0, 10) — ...``.

Dtype rule (decided here, once, for all loaders):
    * Float features of any width become float32 by round-to-nearest (float64
      keeps ~7 significant digits, as `torch.from_numpy(x).float()` and Keras'
      default floatx do). A finite float64 value beyond float32's range
      (|v| > 3.4e38) is rejected rather than silently becoming inf.
    * Integer and bool features become float32 only when every value is exactly
      representable (|v| <= 2**24); they are NOT rescaled (uint8 pixels stay
      0..255; use `fdl.data.preprocess` or the image loaders, which scale to [0, 1]).
    * Object, string, bytes, complex and datetime features are rejected.
    * Classification labels (num_classes set) may be integers or whole-valued
      floats (as read from a CSV); they become int32 of shape (n,).
    * Regression targets (num_classes None) follow the feature rule.
    * A split that holds a pytree of examples (`Split(x={"tokens": ..., "mask": ...})`)
      keeps its dtypes (token ids stay integers); its leaves must share one leading
      length n >= 1 and float leaves must be finite (`check_example_tree`, which the
      engine runs on the batches given to `fit` too). A dict x with labels (a model's
      dict of inputs, `Split({"a": ..., "b": ...}, y)`) keeps x's dtypes too; its
      labels follow the label rule, and every split has the train split's inputs.

This module works on any object with the containers' fields (`.x`, `.y`, `.name`,
`.splits()`, ...) and imports none of them: `fdl.data.dataset` imports it, so that a
`Dataset` rejects a split of mismatched leaves when it is built.
"""
import dataclasses
import math
import numbers
from collections.abc import Mapping

import jax
import numpy as np

from fdl.typing import Shape

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_EXACT_INT = 2**24  # every integer with |v| <= 2**24 is exact in float32
_CHUNK_VALUES = 1 << 22  # values per block of the NaN/Inf scan: bounds its temporary memory


__all__ = ["as_float32", "as_class_labels", "validate_dataset", "check_input_shape",
           "check_example_tree", "check_dict_split", "check_split_tree", "first_non_finite"]


def _first_true(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True of `mask` in C order (the smallest example index first)."""
    return tuple(int(i) for i in np.unravel_index(np.argmax(mask), mask.shape))


def _first_bad_message(where: str, mask: np.ndarray, values: np.ndarray, problem: str) -> str:
    index = _first_true(mask)
    position = f" at feature index {index[1:]}" if len(index) > 1 else ""
    return f"{where}[{index[0]}] holds {values[index].item()!r}{position}, {problem}"


def as_float32(values: np.ndarray, where: str) -> np.ndarray:
    """Converts real-valued data to float32 following the module's dtype rule.

    Args:
        values: (n, ...) array of any real dtype.
        where: Name used in errors, e.g. "dataset 'mnist' train.x".

    Returns:
        (n, ...) float32 array, finite everywhere.

    Raises:
        ValueError: non-real dtype, a value float32 cannot hold, or NaN/Inf.
    """
    values = np.asarray(values)
    kind = values.dtype.kind
    if kind in "iub":
        too_big = (values > _FLOAT32_EXACT_INT) | (values < -_FLOAT32_EXACT_INT)
        if too_big.any():
            raise ValueError(_first_bad_message(
                where, too_big, values, "which float32 cannot represent exactly "
                "(|v| > 2**24) — rescale it before loading"))
    elif kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            raise ValueError(_first_bad_message(
                where, ~finite, values, "which is not finite — drop or impute that example"))
        too_big = np.abs(values) > _FLOAT32_MAX
        if too_big.any():
            raise ValueError(_first_bad_message(
                where, too_big, values, "beyond float32's range (±3.4e38) — rescale it "
                "before loading"))
    else:
        raise ValueError(f"{where} has dtype {values.dtype}; expected real numbers (float, "
                         "int or bool) — parse and convert it with .astype(np.float32) first")
    return values.astype(np.float32, copy=False)


def as_class_labels(labels: np.ndarray, where: str, num_classes: int) -> np.ndarray:
    """Checks classification labels and converts them to int32.

    Args:
        labels: (n,) integer or whole-valued float class indices.
        where: Name used in errors, e.g. "dataset 'mnist' train.y".
        num_classes: Labels must lie in [0, num_classes).

    Returns:
        (n,) int32 labels.

    Raises:
        ValueError: wrong rank, non-numeric dtype, a fractional label or one
            outside [0, num_classes).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{where} has shape {labels.shape}; classification labels must be "
                         "(n,) class indices — for one-hot rows pass y.argmax(axis=1)")
    if labels.dtype.kind == "f":
        # checked like the negative labels below: the first bad index, the value, the fix
        non_finite = ~np.isfinite(labels)
        if non_finite.any():
            raise ValueError(_first_bad_message(
                where, non_finite, labels, "which is not finite — drop that example or give "
                "it a class index"))
        fractional = labels != np.round(labels)
        if fractional.any():
            raise ValueError(_first_bad_message(
                where, fractional, labels, "not a whole number — class labels must be whole "
                "numbers (class indices 0..num_classes-1); pass num_classes=None for "
                "regression targets"))
    elif labels.dtype.kind not in "iub":
        raise ValueError(f"{where} has dtype {labels.dtype}; expected integer class indices")
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        raise ValueError(_first_bad_message(
            where, outside, labels, f"outside [0, {num_classes}) — class labels must be "
            "0..num_classes-1"))
    return labels.astype(np.int32)


def _validate_split(split, where: str, num_classes: int | None, feature_shape: Shape):
    """Checks one `Split`'s lengths, shapes and values; returns it converted."""
    x = np.asarray(split.x)
    if x.ndim < 2:
        raise ValueError(f"{where}.x has shape {x.shape}; expected (n, *feature_shape) with at "
                         "least one feature axis — add one with x[:, None]")
    if x.shape[0] == 0:
        raise ValueError(f"{where} is empty (x has shape {x.shape}) — pass None for a split "
                         "you do not have")
    if x.shape[1:] != tuple(feature_shape):
        raise ValueError(f"{where}.x has per-example shape {x.shape[1:]}, but the dataset's "
                         f"feature_shape is {tuple(feature_shape)} — give every split the "
                         "same feature shape")
    if split.y is None:
        return split._replace(x=as_float32(x, f"{where}.x"))
    return split._replace(x=as_float32(x, f"{where}.x"), y=_labels(split.y, x.shape[0], where, num_classes))


def _labels(y, n: int, where: str, num_classes: int | None) -> np.ndarray:
    """One label per example of a split of n: int32 class labels, or float32 targets (num_classes None)."""
    y = np.asarray(y)
    num_labels = y.shape[0] if y.ndim else 0
    if num_labels != n:
        raise ValueError(f"{where}: x has {n} examples but y has {num_labels} (first "
                         f"unmatched index {min(n, num_labels)}) — give every example "
                         "exactly one label")
    return as_float32(y, f"{where}.y") if num_classes is None else as_class_labels(y, f"{where}.y", num_classes)


def _validate_dict_split(split, dataset_name: str, split_name: str, num_classes: int | None, feature_shape):
    """A split whose x is a dict: its leaves checked as a pytree (dtypes kept, `check_dict_split`),
    its labels, when it has them, by the label rule."""
    n = check_dict_split(dataset_name, split_name, split, feature_shape)
    if split.y is None:
        return split
    return split._replace(y=_labels(split.y, n, f"dataset {dataset_name!r} {split_name}", num_classes))


def validate_dataset(dataset):
    """Checks every split of `dataset` and returns a copy with converted arrays.

    Args:
        dataset: Any `fdl.data.Dataset`; its splits may hold arrays of any real
            dtype, or pytrees of examples (checked by `check_split_tree`, kept as they are).

    Returns:
        The same dataset with float32 features, int32 labels (classification)
        or float32 targets (regression); pytree splits unchanged.

    Raises:
        ValueError: one line naming the split, the array and the first bad index
            (see the module docstring for the rules).
    """
    where = f"dataset {dataset.name!r}"
    num_classes = dataset.num_classes
    if num_classes is not None:
        if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"{where}: num_classes must be a positive int, got {num_classes!r}")
        num_classes = int(num_classes)  # a numpy integer would leak into configs and records
    if dataset.class_names is not None and len(dataset.class_names) != num_classes:
        raise ValueError(f"{where}: {len(dataset.class_names)} class_names for "
                         f"num_classes={num_classes} — give one name per class")
    checked = {name: _validate_dict_split(split, dataset.name, name, num_classes, dataset.feature_shape)
               if isinstance(split.x, Mapping) else
               _validate_split(split, f"{where} {name}", num_classes, dataset.feature_shape)
               for name, split in dataset.splits().items()}
    return dataclasses.replace(dataset, num_classes=num_classes, **checked)


def check_input_shape(dataset, input_shape: Shape) -> None:
    """Raises when the model's per-example input shape differs from the data's.

    The engine calls this before `init`, so a missing channel axis is reported
    in terms of the data rather than as a shape error deep inside a layer.

    Args:
        dataset: The dataset to train on.
        input_shape: Per-example shape the model expects, e.g. (40, 1).

    Raises:
        ValueError: the shapes differ; the message gives the reshape that fixes
            it when the number of values per example agrees.
    """
    data_shape, input_shape = tuple(dataset.feature_shape), tuple(input_shape)
    if data_shape == input_shape:
        return
    if np.prod(data_shape) == np.prod(input_shape):
        fix = (f"reshape with x.reshape((-1, {', '.join(map(str, input_shape))})) or start the "
               f"model with Reshape({input_shape})")
    else:
        fix = (f"the sizes differ ({int(np.prod(data_shape))} vs {int(np.prod(input_shape))} "
               "values per example) — check the model's input_shape")
    raise ValueError(f"dataset {dataset.name!r} train.x has per-example shape {data_shape}, "
                     f"model expects {input_shape} — {fix}")


# --- pytrees of examples ----------------------------------------------------------------------

def first_non_finite(values: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN/Inf of `values` (C order), or None; scans blocks of rows so the
    boolean mask stays small (at most `_CHUNK_VALUES` values at a time)."""
    if values.dtype.kind not in "fc" or values.size == 0:
        return None
    rows = max(1, _CHUNK_VALUES // max(1, math.prod(values.shape[1:])))
    for start in range(0, values.shape[0], rows):
        finite = np.isfinite(values[start:start + rows])
        if not finite.all():
            index = _first_true(~finite)
            return (start + index[0],) + index[1:]
    return None


def _leaf_name(role: str, path) -> str:
    return role + "".join(f"[{getattr(p, 'key', getattr(p, 'idx', getattr(p, 'name', p)))!r}]" for p in path)


def check_example_tree(role: str, data, *, finite: bool = True) -> int:
    """Checks a pytree batch: every leaf has a leading example axis of the same length n >= 1.

    The pytree form of `fdl.train.checks.check_examples`, for objectives' batches (`(x, y)`,
    a dict, a bare x) and for splits holding a pytree: the leaf whose length differs is
    named by its path (`train['tokens'] has 100 examples but train['mask'] has 99`).

    Args:
      role: the name in messages: "train", "val", "evaluate", a split's name.
      data: a pytree of arrays, each (n, ...).
      finite: also scan float leaves for NaN/Inf (one pass over them).

    Returns:
      n, the number of examples.

    Raises:
      ValueError: no arrays, a leaf without an example axis, lengths that differ,
        an empty batch, or (with `finite`) a NaN/Inf in a float leaf.
    """
    leaves = jax.tree_util.tree_flatten_with_path(data)[0]
    if not leaves:
        raise ValueError(f"{role}: holds no arrays — give arrays with a leading example axis")
    n = None
    for path, leaf in leaves:
        leaf = np.asarray(leaf)
        name = _leaf_name(role, path)
        if leaf.ndim == 0:
            raise ValueError(f"{name} is a scalar; every array of a batch needs a leading example axis")
        if n is None:
            n, first_name = leaf.shape[0], name
        elif leaf.shape[0] != n:
            raise ValueError(f"{name} has {leaf.shape[0]} examples but {first_name} has {n} — give "
                             "every array one row per example")
        if finite and leaf.dtype.kind == "f":
            bad = first_non_finite(leaf)
            if bad is not None:
                index = str(bad[0]) if len(bad) == 1 else str(bad)
                raise ValueError(f"{name}[{index}] holds {leaf[bad].item()} — drop or impute that example")
    if n == 0:
        raise ValueError(f"{role}: is empty (0 examples) — give at least one example")
    return int(n)


def check_dict_split(dataset_name: str, split_name: str, split, feature_shape=None, *, finite: bool = True) -> int:
    """Checks a split whose x is a dict: `check_split_tree` of x, and with a dict `feature_shape`
    (a model's dict of inputs) the same keys and per-example shapes as it.

    Returns:
      n, the split's number of examples.

    Raises:
      ValueError: one line naming the dataset, the split and the key (`dataset 'pairs':
        val.x['b'] has per-example shape (3,), but the dataset's feature_shape['b'] is (4,) — ...`).
    """
    n = check_split_tree(dataset_name, split_name, split.x, finite=finite)
    if not isinstance(feature_shape, Mapping):
        return n
    where = f"dataset {dataset_name!r}: {split_name}.x"
    missing = [name for name in feature_shape if name not in split.x]
    extra = [name for name in split.x if name not in feature_shape]
    if missing or extra:
        problem = f"has no input {missing[0]!r}" if missing else f"has input {extra[0]!r}, which train has not"
        raise ValueError(f"{where} {problem} (train's inputs are {list(feature_shape)}) — give every split "
                         "the same inputs")
    for name, want in feature_shape.items():
        shape = tuple(np.shape(split.x[name])[1:])
        if shape != tuple(want):
            raise ValueError(f"{where}[{name!r}] has per-example shape {shape}, but the dataset's "
                             f"feature_shape[{name!r}] is {tuple(want)} — give every split the same feature shape")
    return n


def check_split_tree(dataset_name: str, split_name: str, examples, *, finite: bool = True) -> int:
    """`check_example_tree` of one split of a dataset, the error prefixed with the dataset's name.

    Example:
      >>> check_split_tree("corpus", "val", {"tokens": np.zeros((100, 17), np.int32),
      ...                                    "mask": np.ones((90, 17), bool)})
      Traceback (most recent call last):
      ValueError: dataset 'corpus': val['tokens'] has 100 examples but val['mask'] has 90 — ...

    Returns:
      n, the split's number of examples.

    Raises:
      ValueError: one line, `dataset '<name>': <what check_example_tree says>`.
    """
    try:
        return check_example_tree(split_name, examples, finite=finite)
    except ValueError as error:
        raise ValueError(f"dataset {dataset_name!r}: {error}") from None
