"""Layer transforms: `remat` (recompute activations in the backward pass) and `repeat`
(n copies of a layer scanned over stacked params, so compile time does not grow with n).

Both return a `Layer` with the usual contract. `remat(layer)` keeps the layer's
params, state, kind and name, so it can wrap any child without changing a
checkpoint. `repeat(layer, n)` stacks the params and state of its n copies
along a new leading axis.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fdl.errors import unknown_name_message
from fdl.nn import core
from fdl.nn.core import Layer, ShapeError, child_key

__all__ = ["remat", "repeat", "REMAT_POLICIES"]

# The argument-free policies of `jax.checkpoint_policies`, by name. The factories
# (`save_only_these_names(...)`, `offload_dot_with_no_batch_dims(...)`) are passed
# as the callables they return.
REMAT_POLICIES = ("everything_saveable", "nothing_saveable", "dots_saveable", "checkpoint_dots",
                  "dots_with_no_batch_dims_saveable", "checkpoint_dots_with_no_batch_dims")


def _remat_policy(policy):
    """`policy` as `jax.checkpoint` takes it: None, a callable, or a REMAT_POLICIES name."""
    if policy is None or callable(policy):
        return policy
    if policy not in REMAT_POLICIES:
        raise ValueError(f"remat: {unknown_name_message('policy', policy, REMAT_POLICIES)} "
                         "(or pass a jax.checkpoint_policies callable)")
    return getattr(jax.checkpoint_policies, policy)


def remat(layer: Layer, policy=None, *, prevent_cse: bool = True) -> Layer:
    """`layer` with its activations recomputed in the backward pass (`jax.checkpoint`).

    The forward values and gradients are those of `layer`; the backward pass
    stores only what `policy` lets it save and recomputes the rest, trading
    compute for memory. Wrap the repeated block of a deep model
    (`repeat(remat(block), depth)`) so memory grows with one block's
    activations instead of every block's.

    The wrapped layer has the same init, params, state, kind and name as
    `layer` (a `serial` names it as it would name `layer`), so remat can be
    switched on and off without touching a checkpoint. Dropout keys, `train`
    and the state flow as in `layer`.

    Args:
      layer: any Layer.
      policy: what the backward pass may keep: None (jax's default: nothing
        but the layer's inputs), a name from REMAT_POLICIES ("nothing_saveable",
        "dots_saveable", "everything_saveable", ...) or a callable from
        `jax.checkpoint_policies`, e.g. `save_only_these_names("attention")`.
      prevent_cse: `jax.checkpoint`'s; False is safe (and faster) inside
        `lax.scan`, e.g. under `repeat`.

    Raises:
      ValueError: an unknown policy name, with the closest one (constructor).

    Example:
      >>> model = nn.serial(nn.remat(nn.Dense(3), "dots_saveable"), nn.Relu())
      >>> _, params, _ = model.init(jax.random.key(0), (4,))
      >>> sorted(params)  # the same names as without remat
      ['dense_0', 'relu_1']
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"remat: expected a Layer, got {type(layer).__name__}")
    checkpoint_policy = _remat_policy(policy)

    def apply(params, state, x, *, key=None, train=False):
        def run(params, state, x, key):
            return layer.apply(params, state, x, key=key, train=train)

        return jax.checkpoint(run, policy=checkpoint_policy, prevent_cse=prevent_cse)(
            params, state, x, key)

    return layer._replace(apply=apply)


def repeat(layer: Layer, n: int, *, unroll: int = 1) -> Layer:
    """`n` copies of `layer`, each with its own params, applied one after another by `lax.scan`.

    The same function as `serial(layer, ..., layer)` (n times): copy i gets
    serial's init key and apply key (`fold_in(key, i)`), so with the same key
    copy i starts from the params serial's child i would get. The program
    holds the layer once, inside a loop, so compile time and program size do
    not grow with `n` (`experiments/benchmark_depth.py`).

    Params and state are the child's, with a leading axis of size n on every
    leaf: in a serial, `params["repeat_0"]["residual_0"]["dense_1"]["w"]` has
    shape `(n, fan_in, fan_out)`, and `jax.tree.map(lambda a: a[i], params)`
    is copy i's. Init runs the child's init under `jax.vmap` over the n keys.

    Args:
      layer: a Layer whose output has the shape (and structure) of its input:
        a Transformer block, a residual, ... A pair `(x, valid)` works when
        the layer returns the pair.
      n: number of copies, >= 1.
      unroll: `lax.scan`'s unroll, copies per loop iteration.

    Input and output: the layer's input.

    Raises:
      ValueError: n or unroll not a positive int (constructor).
      ShapeError: the layer changes its input's shape (init), with the layer path.

    Example:
      >>> stack = nn.repeat(nn.residual(nn.Dense(4), nn.Tanh()), 3)
      >>> out_shape, params, state = stack.init(jax.random.key(0), (4,))
      >>> out_shape, params["dense_0"]["w"].shape  # copy i: params["dense_0"]["w"][i]
      ((4,), (3, 4, 4))
    """
    for name, value in (("n", n), ("unroll", unroll)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"repeat: {name} must be a positive int, got {value!r}")
    if not isinstance(layer, Layer):
        raise TypeError(f"repeat: expected a Layer, got {type(layer).__name__} — did you pass the "
                        "constructor without calling it?")

    def init(key, input_shape):
        input_shape, shapes = _as_tuples(input_shape), {}

        def init_one(index):
            shapes["out"], params, state = layer.init(child_key(key, index), input_shape)
            return params, state

        # The child's init runs once, traced under vmap; fdl.summary's record would hold
        # tracers of that trace, so the record is paused and the Repeat row counts all copies.
        token = core._INIT_RECORD.set(None)
        try:
            params, state = jax.vmap(init_one)(jnp.arange(n))
        except ShapeError as error:
            raise error.within("repeat") from None
        finally:
            core._INIT_RECORD.reset(token)
        if _as_tuples(shapes["out"]) != input_shape:
            raise ShapeError("Repeat", f"the layer maps {input_shape} to {shapes['out']}, but repeat "
                             "feeds each copy's output to the next — repeat only layers that keep "
                             "their input's shape")
        return input_shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        def step(x, copy):
            index, copy_params, copy_state = copy
            y, new_state = layer.apply(copy_params, copy_state, x, key=child_key(key, index),
                                       train=train)
            return y, new_state

        return lax.scan(step, x, (jnp.arange(n), params, state), unroll=unroll)

    return Layer(init, apply, "Repeat")


def _as_tuples(shape):
    """A (possibly nested) shape with every list made a tuple, so shapes compare by value."""
    return tuple(_as_tuples(s) for s in shape) if isinstance(shape, (tuple, list)) else shape
