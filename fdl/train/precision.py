"""Training precision: float32, pure bfloat16/float16, or mixed (float32 state, low-precision compute).

    fit(model, data, precision="mixed_bfloat16")

  float32         everything in float32 (the default)
  bfloat16        params, optimizer state and compute in bfloat16
  float16         params and compute in float16, with dynamic loss scaling; the optimizer
                  state stays float32 (Adam's second moment, a gradient squared, underflows
                  float16's range: a 1e-4 gradient's 1e-8 is 0 there, and the update explodes)
  mixed_bfloat16  params and optimizer state in float32; the model computes in bfloat16
                  (params and inputs cast on the way in) and its outputs come back as
                  float32, so losses and metrics are float32 (Keras' "mixed_bfloat16")
  mixed_float16   the same in float16, with dynamic loss scaling

Dynamic loss scaling (`dynamic_loss_scale`, the scheme of NVIDIA's AMP and
DeepMind's jmp) multiplies the loss by a scale before differentiating, so small
float16 gradients do not flush to zero, and divides the gradients by it
before the optimizer. A step whose gradients are not finite is skipped — the
params and optimizer state stay as they were — and the scale halves; after
`period` finite steps in a row it doubles. The scale lives in the optimizer
state (`LossScaleState`), so it is checkpointed and resumed with the run.
Evaluation and prediction run at the params' dtype (float32 for mixed).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fdl.train.finite import all_finite

__all__ = ["PRECISIONS", "Precision", "get_precision", "cast_floating", "mixed_apply", "updates_in_float32",
           "LossScaleState", "dynamic_loss_scale", "loss_scale"]

PRECISIONS = ("float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class Precision:
    """name: one of PRECISIONS; param_dtype: how params are kept; state_dtype: how the optimizer
    state is kept; compute_dtype: what the model computes in."""

    name: str
    param_dtype: Any
    state_dtype: Any
    compute_dtype: Any

    @property
    def mixed(self) -> bool:
        return self.param_dtype != self.compute_dtype

    @property
    def scales_loss(self) -> bool:
        """float16 compute: gradients need dynamic loss scaling."""
        return self.compute_dtype == jnp.float16


def get_precision(name: str) -> Precision:
    """The Precision called `name`; a one-line error naming the choices otherwise."""
    if name not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    low = jnp.bfloat16 if "bfloat16" in name else jnp.float16 if "float16" in name else jnp.float32
    params = jnp.float32 if name.startswith("mixed") else low
    return Precision(name, params, jnp.bfloat16 if params == jnp.bfloat16 else jnp.float32, low)


def cast_floating(tree, dtype):
    """Every floating-point leaf of `tree` as `dtype`; integer and boolean leaves unchanged."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def mixed_apply(apply, compute_dtype):
    """`apply(params, model_state, x, **kw)` computing in `compute_dtype`: params and the floating
    leaves of x cast in, outputs back as float32, the new model state in its stored dtypes (the
    state itself is not cast: BatchNorm's running statistics accumulate in float32)."""

    def run(params, model_state, x, **kwargs):
        y, new_state = apply(cast_floating(params, compute_dtype), model_state, cast_floating(x, compute_dtype),
                             **kwargs)
        new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, model_state)
        return cast_floating(y, jnp.float32), new_state

    return run


def updates_in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` computing in float32 over low-precision params and state, storing in their dtypes.

    Pure bfloat16 keeps the optimizer state in bfloat16, pure float16 its params in
    float16; the update is computed in float32 (Adam's eps=1e-8 is 0 in float16) and
    cast back to each stored array's dtype.
    """

    def update(grads, state, params=None):
        updates, new_state = inner.update(cast_floating(grads, jnp.float32), cast_floating(state, jnp.float32),
                                          None if params is None else cast_floating(params, jnp.float32))
        return (jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads),
                jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, state))

    return optax.GradientTransformation(inner.init, update)


class LossScaleState(NamedTuple):
    """scale: () float32, the loss scale; good_steps: () int32, finite steps since the last change;
    inner: the wrapped optimizer's state."""

    scale: jax.Array
    good_steps: jax.Array
    inner: Any


def dynamic_loss_scale(inner: optax.GradientTransformation, *, initial_scale: float = 2.0 ** 15,
                       period: int = 2000, factor: float = 2.0) -> optax.GradientTransformation:
    """`inner` fed gradients of a loss multiplied by the state's scale (see the module docstring).

    `update` takes the SCALED gradients, unscales them, and applies `inner` only when they are
    all finite; otherwise the updates are zeros, `inner`'s state is kept and the scale is
    divided by `factor` (never below 1).
    """

    def init(params):
        return LossScaleState(jnp.asarray(initial_scale, jnp.float32), jnp.zeros((), jnp.int32), inner.init(params))

    def update(grads, state: LossScaleState, params=None):
        grads = jax.tree.map(lambda g: (g / state.scale).astype(g.dtype), grads)
        finite = all_finite(grads)
        updates, new_inner = inner.update(grads, state.inner, params)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        new_inner = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_inner, state.inner)
        grown = state.good_steps + 1 >= period
        scale = jnp.where(finite, jnp.where(grown, state.scale * factor, state.scale),
                          jnp.maximum(state.scale / factor, 1.0))
        good_steps = jnp.where(finite & ~grown, state.good_steps + 1, 0).astype(jnp.int32)
        return updates, LossScaleState(scale.astype(jnp.float32), good_steps, new_inner)

    return optax.GradientTransformation(init, update)


def loss_scale(opt_state) -> jax.Array | None:
    """The loss scale of an optimizer state wrapped by `dynamic_loss_scale`, else None."""
    return opt_state.scale if isinstance(opt_state, LossScaleState) else None
