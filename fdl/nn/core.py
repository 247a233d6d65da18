"""The layer contract: `Layer`, shape errors, key splitting and `batched`.

A `Layer` is an immutable pair of pure functions::

    init(key, input_shape) -> (output_shape, params, state)
    apply(params, state, x, *, key=None, train=False) -> (y, new_state)

`input_shape`/`output_shape` are per-example shapes (no batch axis) and `x` is
one example. `params` and `state` are nested dicts of arrays; stateless layers
return `{}` as state and hand back the state they got from `apply`.
"""
from __future__ import annotations

import contextvars
import re
from typing import Any, Callable, NamedTuple

import jax

from fdl.typing import Params, PRNGKey, Shape, State

__all__ = ["Layer", "InitFn", "ApplyFn", "ShapeError", "BATCH_AXIS", "named", "as_shape", "init_child",
           "child_key", "batched", "expect_rank", "expect_sequence", "snake_case"]

InitFn = Callable[[PRNGKey, Shape], tuple[Any, Params, State]]
ApplyFn = Callable[..., tuple[Any, State]]

BATCH_AXIS = "batch"


class Layer(NamedTuple):
    """An immutable (init, apply) pair.

    Attributes:
      init: `init(key, input_shape) -> (output_shape, params, state)`.
      apply: `apply(params, state, x, *, key=None, train=False) -> (y, state)`.
      kind: display name of the layer type, e.g. "Dense", used in errors and
        in the default child name ("dense_0") a combinator gives it.
      name: a user-given name (see `named`), or None for the default.
    """

    init: InitFn
    apply: ApplyFn
    kind: str
    name: str | None = None


def named(name: str, layer: Layer) -> Layer:
    """Returns `layer` under a user-given name, used as its params/state key."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"named: {name!r} is not a valid layer name — use letters, digits and '_'")
    return layer._replace(name=name)


def as_shape(input_shape):
    """A per-example input shape as a tuple, or a dict of them for a model that takes a dict of inputs
    (`{"tokens": (256,), "mask": (256,)}`)."""
    if isinstance(input_shape, dict):
        return {name: as_shape(shape) for name, shape in input_shape.items()}
    return tuple(int(d) for d in input_shape)


def snake_case(kind: str) -> str:
    """'BatchNorm' -> 'batch_norm', 'Conv1D' -> 'conv1d'."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", kind).lower()


class ShapeError(ValueError):
    """A layer got an input shape it cannot take, raised at `init`.

    The message reads `<path> <Kind>: <detail>`; combinators prepend their
    position to `path` as the error travels up, so the user sees where in the
    model the problem is.
    """

    def __init__(self, kind: str, detail: str, path: tuple[str, ...] = ()):
        self.kind, self.detail, self.path = kind, detail, path
        where = " ".join(filter(None, [".".join(path), kind]))
        super().__init__(f"{where}: {detail}")

    def within(self, step: str) -> "ShapeError":
        """The same error one level further up the model, at `step`."""
        return ShapeError(self.kind, self.detail, (step,) + self.path)


def expect_rank(kind: str, input_shape: Shape, rank: int, layout: str, fix: str) -> None:
    """Raises a ShapeError unless `input_shape` has `rank` axes.

    Args:
      kind: the layer's display name.
      input_shape: the per-example shape the layer got.
      rank: the number of axes it needs.
      layout: the axes it needs, e.g. "(length, channels)".
      fix: how to fix it, e.g. "add a channel axis with Reshape((40, 1))".
    """
    if len(input_shape) != rank:
        raise ShapeError(kind, f"expected input {layout}, got {tuple(input_shape)} — {fix}")


def expect_sequence(kind: str, input_shape) -> None:
    """Raises a ShapeError unless `input_shape` is `(length, features)` with length >= 1."""
    shape = tuple(input_shape)
    if len(shape) == 1:
        fix = f"add a feature axis with Reshape(({shape[0]}, 1))"
    else:
        fix = f"merge the feature axes with Reshape(({shape[0] if shape else 'length'}, -1))"
    expect_rank(kind, shape, 2, "(length, features)", fix)
    if shape[0] < 1:
        raise ShapeError(kind, f"expected at least one time step, got input {shape}")


def child_key(key: PRNGKey | None, index: int) -> PRNGKey | None:
    """The key of a combinator's `index`-th child: deterministic, independent per child."""
    return None if key is None else jax.random.fold_in(key, index)


# Set only while `fdl.summary` runs init: it collects (path, kind, output_shape,
# params) for every child. `init` is never traced under it, so it adds no state
# to a compiled program.
_INIT_RECORD: contextvars.ContextVar[list | None] = contextvars.ContextVar("fdl_init_record", default=None)
_INIT_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("fdl_init_path", default=())


def init_child(combinator: str, index: int, name: str, layer: Layer, key: PRNGKey, input_shape):
    """Initializes a combinator's child; use it in your own combinators too.

    The child gets `child_key(key, index)`; a ShapeError it raises is re-raised
    with `combinator[index]` prepended to its path.
    """
    path = _INIT_PATH.get() + (name,)
    record = _INIT_RECORD.get()
    if record is not None:
        row = len(record)
        record.append(None)  # keep pre-order: the parent's row before its children's
    token = _INIT_PATH.set(path)
    try:
        output_shape, params, state = layer.init(child_key(key, index), input_shape)
    except ShapeError as error:
        raise error.within(f"{combinator}[{index}]") from None
    finally:
        _INIT_PATH.reset(token)
    if record is not None:
        record[row] = (path, layer.kind, output_shape, params)
    return output_shape, params, state


def batched(model: Layer) -> ApplyFn:
    """Lifts a one-example model to a batch with `jax.vmap` over axis "batch".

    Params and state are shared by every example; each example gets its own
    key (split from `key`), so dropout masks differ across the batch. Layers
    that need batch statistics reduce over the named axis "batch".

    Args:
      model: a Layer written for one example.

    Returns:
      `apply(params, state, xs, *, key=None, train=False) -> (ys, new_state)`
      where `xs` has a leading batch axis `(batch, *input_shape)`.
    """

    def apply_batch(params, state, xs, *, key=None, train=False):
        def apply_one(x, example_key):
            return model.apply(params, state, x, key=example_key, train=train)

        if key is None:
            return jax.vmap(lambda x: apply_one(x, None), out_axes=(0, None), axis_name=BATCH_AXIS)(xs)
        batch_size = jax.tree_util.tree_leaves(xs)[0].shape[0]
        keys = jax.random.split(key, batch_size)
        return jax.vmap(apply_one, out_axes=(0, None), axis_name=BATCH_AXIS)(xs, keys)

    return apply_batch
