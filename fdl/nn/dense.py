"""Dense (fully connected) layer."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fdl.nn.core import Layer, ShapeError
from fdl.nn.initializers import get_initializer

__all__ = ["Dense"]


def Dense(features: int, *, use_bias: bool = True, w_init="lecun_normal", b_init="zeros",
          dtype=jnp.float32) -> Layer:
    """y = x @ w + b over the last axis of one example.

    Args:
      features: output width.
      use_bias: add `b`.
      w_init, b_init: initializer names or callables (see fdl.nn.initializers).

    Params: `w: (in_features, features)`, `b: (features,)`.
    Input `(..., in_features)`; output `(..., features)` (leading axes kept, as
    in Keras and PyTorch).
    """
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"Dense: features must be a positive int, got {features!r}")
    w_initializer = get_initializer(w_init, owner="Dense w_init")
    b_initializer = get_initializer(b_init, owner="Dense b_init")

    def init(key, input_shape):
        if len(input_shape) < 1 or not all(isinstance(d, int) for d in input_shape):
            raise ShapeError("Dense", f"expected input (..., features), got {input_shape} — "
                             "give a per-example shape such as (40,)")
        w_key, b_key = jax.random.split(key)
        params = {"w": w_initializer(w_key, (input_shape[-1], features), dtype)}
        if use_bias:
            params["b"] = b_initializer(b_key, (features,), dtype)
        return tuple(input_shape[:-1]) + (features,), params, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        y = x @ params["w"]
        if use_bias:
            y = y + params["b"]
        return y, state

    return Layer(init, apply, "Dense")
