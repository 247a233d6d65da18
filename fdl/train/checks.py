"""Up-front checks of what `fit`, `evaluate`, `predict` and `train_population` are given.

The loaders validate a `Dataset` when it is loaded (`fdl.data.validate`); arrays
handed straight to the Python API get the same care here, once per call and
before anything is compiled, so a wrong argument is a one-line `ValueError`
naming the argument (its *role*: "train", "val", "evaluate", "predict"), the
shape or the first bad index, and the fix — not a `dot_general` error from
inside jax, a NaN loss blamed on the learning rate, or an accuracy of 0.0.

    >>> n = check_examples("train", x, y)                    # lengths, dtypes, NaN/Inf in x
    >>> out = check_model_input("train", model, x.shape[1:])  # the model accepts the examples
    >>> y = check_targets("train", y, out, "cross_entropy")   # labels fit the loss and the output

`check_data` runs the three in that order. Every check works on host numpy and
is vectorized (no Python loop over examples), so it costs one pass over the
arrays; a device array is copied to the host once.

A model that takes a dict of inputs (Keras' `model.fit({"a": xa, "b": xb}, y)`)
is checked here too, on every path (`fit` with a loss or an objective, its
`val`, `evaluate`, `predict`, a loaded run): the leaves share one length (the
one that differs is named, `predict['b'] has 63 examples but predict['a'] has
64`), each is real numbers, and against the training inputs (`expected_shape`,
a dict) a missing or extra key and each key's shape are named.

Target rules by loss (a loss is named by a string, an object with `.name`, or
one of `fdl.losses`' functions; any other callable gets only the generic checks):

* ``cross_entropy``: per-example targets shaped like the output without its last
  axis are class indices — integers, or whole-valued floats (converted to int32,
  the loaders' rule) — in ``[0, C)`` with ``C = output_shape[-1]``; targets shaped
  like the output are one-hot / probability rows: values in [0, 1] summing to 1.
* ``binary_cross_entropy``: one target per logit, in [0, 1].
* ``mse``, ``mae``, ``huber``: as many target values per example as outputs.
* ``elbo_bernoulli`` / ``elbo_gaussian``: the target (the input) has as many
  values as the reconstruction; Bernoulli targets lie in [0, 1].
"""
from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from fdl.data.validate import check_example_tree  # moved to fdl.data: the loaders check pytrees too
from fdl.data.validate import first_non_finite as _first_non_finite
from fdl.nn.core import Layer, ShapeError, as_shape

__all__ = ["check_example_tree", "check_data", "check_examples", "check_model_input", "check_positive_int",
           "check_targets", "example_shape", "host_examples", "loss_name"]

_SUM_TOLERANCE = 1e-3  # probability rows: float32 one-hot / mixup rows sum to 1 within this


# --- small helpers --------------------------------------------------------------------------

def loss_name(loss) -> str | None:
    """The registry name of a loss given as a name, an object with `.name`, or an fdl.losses function.

    `functools.partial` of an fdl.losses function (e.g. `cross_entropy_with`) is named
    after that function. Anything else (a user's callable) gives None.
    """
    from fdl.losses import LOSSES  # noqa: PLC0415 — fdl.losses imports optax; keep this module light

    if loss is None or isinstance(loss, str):
        return loss
    name = getattr(loss, "name", None)
    if isinstance(name, str):
        return name
    function = loss.func if isinstance(loss, functools.partial) else loss
    for registered, candidate in LOSSES.items():
        if function is candidate:
            return registered
    return None


def _index_text(index: tuple[int, ...]) -> str:
    return str(index[0]) if len(index) == 1 else str(tuple(index))


def _value_text(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True of `mask` in C order (the smallest example index first)."""
    return tuple(int(i) for i in np.unravel_index(np.argmax(mask), mask.shape))


def _size_fix(role: str, got: tuple, want: tuple, array: str = "x") -> str:
    if math.prod(got) == math.prod(want):
        return f"reshape with {array}.reshape((-1, {', '.join(map(str, want))}))"
    return f"give {role} examples of shape {want}, like the training data"


def _is_shape(shape) -> bool:
    return isinstance(shape, tuple) and all(isinstance(d, int) for d in shape)


# --- the checks -----------------------------------------------------------------------------

def check_positive_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """Returns `value` as an int after checking `minimum <= value <= maximum`.

    `epochs` takes minimum 1: it is the total number of epochs, also when
    resuming from a state, so 0 would train nothing (pass a larger total to
    continue a run). Bools and floats (even 2.0) are rejected: they are typos.

    Args:
      name: the argument, e.g. "epochs", "batch_size".
      value: what the caller gave.
      minimum, maximum: inclusive bounds (maximum None: no upper bound).

    Raises:
      ValueError: not an integer, or out of bounds.
    """
    bounds = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int {bounds}, got {value!r} ({type(value).__name__})"
                         f" — pass a whole number such as {name}={max(minimum, 1)}")
    if value < minimum or (maximum is not None and value > maximum):
        why = f" (the number of training examples is {maximum})" if name == "batch_size" and maximum else ""
        raise ValueError(f"{name} must be an int {bounds}{why}, got {value} — pass "
                         f"{name}={minimum if value < minimum else maximum}")
    return int(value)


def host_examples(x):
    """`x` as host numpy: one array, or a model's dict of inputs with each leaf an array."""
    return {name: np.asarray(leaf) for name, leaf in x.items()} if isinstance(x, Mapping) else np.asarray(x)


def example_shape(x):
    """The per-example shape of examples `x`: `x.shape[1:]`, or a dict of them for a dict of inputs."""
    if isinstance(x, Mapping):
        return {name: as_shape(np.shape(leaf)[1:]) for name, leaf in x.items()}
    return as_shape(np.shape(x)[1:])


def _check_array_x(role: str, x, finite: bool) -> int:
    """`check_examples` of an array x: (n, *input_shape) real numbers, n >= 1; returns n."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{role}: x has shape {x.shape}; expected (n, *input_shape) with the "
                         "examples along axis 0 — for one example pass x[None], for one feature "
                         "per example x[:, None]")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{role}: x has dtype {x.dtype}; expected real numbers — convert it "
                         "with x.astype(np.float32)")
    if x.shape[0] == 0:
        raise ValueError(f"{role}: x is empty (shape {x.shape}) — give at least one example")
    if finite:
        bad = _first_non_finite(x)
        if bad is not None:
            at = f" at feature index {bad[1:]}" if len(bad) > 1 else ""
            raise ValueError(f"{role}: x[{bad[0]}] holds {_value_text(x[bad])}{at} — drop or "
                             "impute that example")
    return int(x.shape[0])


def _check_dict_x(role: str, x: Mapping, finite: bool) -> int:
    """`check_examples` of a dict of inputs: every leaf (n, ...) real numbers with the same n >= 1
    (`check_example_tree` names the leaf whose length differs, `predict['b']`); returns n."""
    if not x:
        raise ValueError(f"{role}: x is an empty dict — give one array per input of the model")
    n = check_example_tree(role, x, finite=finite)
    for name, leaf in x.items():
        dtype = np.asarray(leaf).dtype
        if dtype.kind not in "biuf":
            raise ValueError(f"{role}: x[{name!r}] has dtype {dtype}; expected real numbers — convert it "
                             f"with x[{name!r}].astype(np.float32)")
    return n


def check_examples(role: str, x, y=None, *, finite: bool = True) -> int:
    """Checks that `x` holds examples along its first axis and `y` one target per example.

    Args:
      role: the argument in messages: "train", "val", "evaluate", "predict".
      x: (n, *input_shape) real numbers, n >= 1; or, for a model that takes a dict
        of inputs, a dict name -> (n, *shape) real numbers with one n.
      y: optional (n, ...) targets.
      finite: also scan x for NaN/Inf (one pass over x; pass False for a huge
        memory-mapped stream, whose batches are checked as they are read).

    Returns:
      n, the number of examples.

    Raises:
      ValueError: x is not (n, *input_shape) real numbers (a dict: leaves of
        different lengths, named), is empty, holds NaN/Inf, or y is not one real
        target per example.
    """
    n = _check_dict_x(role, x, finite) if isinstance(x, Mapping) else _check_array_x(role, x, finite)
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0:
            raise ValueError(f"{role}: y is a scalar; expected one target per example, shape "
                             f"({n}, ...)")
        if y.shape[0] != n:
            raise ValueError(f"{role}: x has {n} examples but y has {y.shape[0]} — give "
                             "one target per example")
        if y.dtype.kind not in "biuf":
            raise ValueError(f"{role}: y has dtype {y.dtype}; expected numbers (class indices "
                             "or real targets) — convert the labels with np.unique(y, "
                             "return_inverse=True)[1]")
    return n


def _abstract_init(model: Layer, input_shape: tuple):
    """(output shape, params as ShapeDtypeStructs), without allocating anything."""
    box = {}

    def init():  # the key is made inside the trace: nothing runs eagerly
        box["shape"], params, _ = model.init(jax.random.PRNGKey(0), input_shape)
        return params

    params = jax.eval_shape(init)
    return box["shape"], params


def _check_params(role: str, shape: tuple, wanted, params) -> None:
    """Raises when `params` (a state's) are not what the model builds for `shape` examples."""
    def table(tree):
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in leaves}

    wanted, given = table(wanted), table(params)
    # deterministic: the model's params in tree order, then the state's extras
    strays = [(path, "missing from the state") for path in wanted if path not in given]
    strays += [(path, "not in the model") for path in given if path not in wanted]
    if strays:
        path, problem = strays[0]
        raise ValueError(f"{role}: the state's params do not belong to this model (params{path} is "
                         f"{problem}) — pass the model the state was trained with")
    for path, want in wanted.items():
        if given[path] != want:
            raise ValueError(f"{role}: examples of shape {shape} need params{path} of shape {want}, "
                             f"but the state's is {given[path]} — the state was trained on examples "
                             f"of another shape; give {role} examples of that shape")


def _check_input_names(role: str, shape, expected) -> None:
    """Raises when examples of per-example `shape` are not the inputs `expected` (one dict or both
    arrays; for a dict, the same keys and each key's shape), naming the input key."""
    if isinstance(shape, dict) != isinstance(expected, dict):
        if isinstance(expected, dict):
            raise ValueError(f"{role}: x is one array of examples of shape {shape}, the model takes a dict "
                             f"of inputs {list(expected)} — pass x as {{name: array}} with those keys")
        raise ValueError(f"{role}: x is a dict of inputs {list(shape)}, the model was built for one array "
                         f"of examples of shape {expected} — pass that array")
    if not isinstance(expected, dict):
        if shape != expected:
            raise ValueError(f"{role}: examples have shape {shape}, the model was built for "
                             f"{expected} — {_size_fix(role, shape, expected)}")
        return
    missing = [name for name in expected if name not in shape]
    if missing:
        raise ValueError(f"{role}: x has no input {missing[0]!r}; the model takes inputs {list(expected)} — "
                         f"give x[{missing[0]!r}] of shape (n, {', '.join(map(str, expected[missing[0]]))})")
    extra = [name for name in shape if name not in expected]
    if extra:
        raise ValueError(f"{role}: x[{extra[0]!r}] is not an input of the model, which takes inputs "
                         f"{list(expected)} — drop it")
    for name, want in expected.items():
        if shape[name] != want:
            raise ValueError(f"{role}: x[{name!r}] has examples of shape {shape[name]}, the model was built "
                             f"for {want} — {_size_fix(role, shape[name], want, f'x[{name!r}]')}")


def check_model_input(role: str, model: Layer, input_shape, *, expected_shape=None,
                      params=None):
    """Checks that `model` takes examples of `input_shape`; returns its per-example output shape.

    The one check of a model's dict of inputs too: with `expected_shape` a dict,
    a missing or extra key and each key's shape are named (`val: x['b'] has
    examples of shape (3,), the model was built for (4,)`); without it, a key the
    model reads and `x` lacks is named from the model's own `init`.

    Args:
      role: the argument in messages ("train", "val", "evaluate", "predict").
      model: the Layer.
      input_shape: per-example shape, `x.shape[1:]` (a dict of them for a dict of
        inputs, `example_shape(x)`).
      expected_shape: the per-example shape the model was built for (the
        training input's, for val data; a dict for a dict of inputs), or None.
      params: a state's params (one model's, not a population's stack), or None:
        they must be the ones `model.init` builds for `input_shape` — this is how
        `evaluate`/`predict` catch examples of another shape than the training ones.

    Returns:
      The model's per-example output shape (a tuple of shapes for several outputs).

    Raises:
      ValueError: the shapes (or a dict's keys) differ from `expected_shape`, a
        layer rejects the input (its own message is kept), or `params` do not fit.
    """
    shape = as_shape(input_shape)
    if expected_shape is not None:
        _check_input_names(role, shape, as_shape(expected_shape))
    try:
        out_shape, wanted = _abstract_init(model, shape)
    except KeyError as error:
        if not isinstance(shape, dict):
            raise
        raise ValueError(f"{role}: the model reads input {error.args[0]!r}, which x does not have (its inputs "
                         f"are {list(shape)}) — give x[{error.args[0]!r}]") from None
    except (ShapeError, TypeError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{role}: examples of shape {shape} do not fit the model — {detail}") from error
    if params is not None:
        _check_params(role, shape, wanted, params)
    return out_shape


def _class_labels(role, y, output_shape, name, input_shape):
    """cross_entropy: class indices (returned as int32 when given as whole floats) or rows."""
    if not output_shape:
        raise ValueError(f"{role}: {name} needs (num_classes,) logits per example, the model "
                         "outputs shape () — end the model with Dense(num_classes)")
    classes = output_shape[-1]
    per_example = y.shape[1:]
    if per_example == output_shape[:-1]:
        if y.dtype.kind == "f":
            fractional = y != np.round(y)
            if fractional.any():
                index = _first(fractional)
                raise ValueError(f"{role}: label {_value_text(y[index])} at index {_index_text(index)} "
                                 f"is not a whole number — {name} takes class indices "
                                 f"0..{classes - 1} (or one-hot rows of shape {output_shape})")
        outside = (y < 0) | (y >= classes)
        if outside.any():
            index = _first(outside)
            value = y[index]
            if value < 0:
                fix = f"class labels are 0..{classes - 1}; remap or drop the negative ones"
            elif classes == 1:
                fix = "for two classes use binary_cross_entropy, or end the model with Dense(2)"
            else:
                fix = (f"the model has {classes} logits; for {int(y.max()) + 1} classes end it "
                       f"with Dense({int(y.max()) + 1})")
            raise ValueError(f"{role}: label {_value_text(value)} at index {_index_text(index)} is "
                             f"outside [0, {classes}) — {fix}")
        return y.astype(np.int32) if y.dtype.kind in "fb" else y
    if per_example == output_shape:
        outside = (y < 0) | (y > 1)
        if outside.any():
            index = _first(outside)
            raise ValueError(f"{role}: {name} target rows hold probabilities in [0, 1], got "
                             f"{_value_text(y[index])} at index {_index_text(index)} — for class "
                             "indices pass y of one label per example")
        sums = y.sum(axis=-1, dtype=np.float64)
        off = np.abs(sums - 1.0) > _SUM_TOLERANCE
        if off.any():
            index = _first(off)
            raise ValueError(f"{role}: the {name} target row at index {_index_text(index)} sums to "
                             f"{_value_text(sums[index])}, not 1 — give one-hot or probability "
                             "rows; for several labels per example use binary_cross_entropy")
        return None
    hint = ""
    if len(output_shape) > 1 and per_example == ():
        hint = (f"; the model keeps the leading axes of examples of shape {input_shape} — flatten "
                "them first (Flatten() or x.reshape(len(x), -1))" if input_shape is not None else
                "; the model keeps the examples' leading axes — flatten them first (Flatten())")
    raise ValueError(f"{role}: y has per-example shape {per_example}, but {name} on the model's "
                     f"output {output_shape} takes labels of shape {output_shape[:-1]} or one-hot "
                     f"rows of shape {output_shape}{hint}")


def _same_size(role, y, output_shape, name, input_shape):
    per_example = y.shape[1:]
    if math.prod(per_example) != math.prod(output_shape):
        hint = ""
        if len(output_shape) > 1 and input_shape is not None:
            hint = (f" — examples of shape {input_shape} keep their leading axes through the "
                    "model; flatten them first (Flatten() or x.reshape(len(x), -1))")
        elif name in ("binary_cross_entropy", "mse", "mae", "huber"):
            hint = (f" — end the model with Dense({max(1, math.prod(per_example))})")
        raise ValueError(f"{role}: {name} needs {math.prod(output_shape)} target value(s) per "
                         f"example like the model's output {output_shape}, y has per-example "
                         f"shape {per_example}{hint}")


def _in_unit_interval(role, y, name, fix):
    outside = (y < 0) | (y > 1)
    if outside.any():
        index = _first(outside)
        raise ValueError(f"{role}: targets of {name} must be in [0, 1], got "
                         f"{_value_text(y[index])} at index {_index_text(index)} — {fix(y[index])}")


def _bce_fix(y):
    def fix(value):
        if value < 0:
            return "relabel the negative class as 0"
        if y.dtype.kind in "iu" or bool(np.all(y == np.round(y))):
            return f"for {int(y.max()) + 1} classes use cross_entropy with {int(y.max()) + 1} logits"
        return "targets are probabilities of the positive class"
    return fix


def check_targets(role: str, y, output_shape, loss, *, input_shape=None):
    """Checks `y` against the loss and the model's per-example output shape.

    Args:
      role: the argument in messages ("train", "val", "evaluate").
      y: (n, ...) targets (lengths already checked by `check_examples`).
      output_shape: the model's per-example output shape (`check_model_input`).
      loss: a name, a loss object with `.name`, an fdl.losses function, or a
        user's callable (then only the NaN/Inf check runs).
      input_shape: per-example input shape, only to word the hint when the
        model kept the examples' leading axes (e.g. (40, 2) into Dense).

    Returns:
      `y` itself, except whole-valued float class labels for cross_entropy, which
      come back as an int32 numpy array (the loaders' rule; the loss wants ints).

    Raises:
      ValueError: NaN/Inf in y, or targets the loss cannot take (see the module
        docstring); the message names the first bad index.
    """
    given = y
    y = np.asarray(y)
    bad = _first_non_finite(y)
    if bad is not None:
        raise ValueError(f"{role}: y[{_index_text(bad)}] holds {_value_text(y[bad])} — drop or "
                         "impute that example's target")
    name = loss_name(loss)
    if name and name.startswith("elbo") and isinstance(output_shape, tuple) and output_shape \
            and _is_shape(output_shape[0]):
        _same_size(role, y, output_shape[0], name, None)
        if name == "elbo_bernoulli" or getattr(loss, "kwargs", {}).get("likelihood") == "bernoulli":
            _in_unit_interval(role, y, name, lambda value: "scale the inputs to [0, 1] (e.g. x / 255)"
                              " or use elbo_gaussian")
        return given
    if not _is_shape(output_shape):
        return given  # several outputs: only a loss that knows them can check them
    input_shape = None if input_shape is None else tuple(input_shape)
    if name == "cross_entropy":
        converted = _class_labels(role, y, tuple(output_shape), name, input_shape)
        return given if converted is None or converted is y else converted
    if name == "binary_cross_entropy":
        _same_size(role, y, tuple(output_shape), name, input_shape)
        _in_unit_interval(role, y, name, _bce_fix(y))
    elif name in ("mse", "mae", "huber"):
        _same_size(role, y, tuple(output_shape), name, input_shape)
    return given


def check_data(role: str, model: Layer, x, y=None, *, loss=None, expected_shape=None,
               params=None, finite: bool = True) -> tuple[int, Any, Any]:
    """`check_examples`, `check_model_input` and (with y) `check_targets`, in that order.

    Example:
      >>> n, out_shape, y = check_data("train", model, x, y, loss="cross_entropy")
      >>> n == len(x), out_shape
      (True, (10,))
      >>> n_val, _, y_val = check_data("val", model, x_val, y_val, loss="cross_entropy",
      ...                              expected_shape=x.shape[1:])
      >>> check_data("predict", model, x_test, params=state.params)[1:]
      ((10,), None)
      >>> check_data("train", model, x, np.full(len(x), 10), loss="cross_entropy")
      Traceback (most recent call last):
      ValueError: train: label 10 at index 0 is outside [0, 10) — the model has 10 logits; ...

    Args:
      role: the argument in messages ("train", "val", "evaluate", "predict").
      model, x, y, loss, expected_shape, params, finite: as in the three checks.

    Returns:
      (n, the model's per-example output shape, y as `check_targets` returns it
      — None without y).

    Raises:
      ValueError: the first check that fails, one line.
    """
    n = check_examples(role, x, y, finite=finite)
    input_shape = example_shape(x)
    out_shape = check_model_input(role, model, input_shape, expected_shape=expected_shape,
                                  params=params)
    if y is not None:  # the hint about the examples' leading axes reads an array's shape
        y = check_targets(role, y, out_shape, loss, input_shape=None if isinstance(x, Mapping) else input_shape)
    return n, out_shape, y
