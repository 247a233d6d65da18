"""Dropout: zeroes random elements in training, identity in evaluation."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fdl.nn.core import Layer, ShapeError

__all__ = ["Dropout"]

NO_KEY_MESSAGE = ("Dropout: train=True needs a key — pass key=... to apply "
                  "(fdl.fit does this for you)")


def Dropout(rate: float, *, broadcast_axes: tuple[int, ...] = ()) -> Layer:
    """Drops each element with probability `rate` in training (inverted dropout).

    `rate` is the probability of DROPPING an element, as in PyTorch's
    `nn.Dropout(p)` and Keras' `Dropout(rate)` (stax's `Dropout(rate)` meant the
    keep probability, jax-ml/jax#849). Kept elements are scaled by
    `1 / (1 - rate)` in training so every element's expected value is
    unchanged, and evaluation (`train=False`) is the identity whatever the key.

    Args:
      rate: drop probability in [0, 1).
      broadcast_axes: per-example axes along which the mask is shared, e.g.
        `(0, 1)` on `(height, width, channels)` drops whole channels
        (spatial dropout, PyTorch's `Dropout2d`, Keras' `SpatialDropout2D`).

    Input `(...)` float; output the same shape. No params, no state.

    Raises:
      ValueError: `rate` outside [0, 1) (constructor); `train=True` without a
        key (apply).
      ShapeError: a `broadcast_axes` entry outside the input's axes (init).
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"Dropout: rate is the drop probability and must be in [0, 1), got {rate!r}")
    keep_prob = 1.0 - rate

    def init(key, input_shape):
        del key
        rank = len(input_shape)
        for axis in broadcast_axes:
            if not -rank <= axis < rank:
                raise ShapeError("Dropout", f"broadcast_axes has axis {axis} but the input "
                                 f"{tuple(input_shape)} has {rank} axes — use axes in [{-rank}, {rank})")
        return tuple(input_shape), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        del params
        if not train:
            return x, state
        if key is None:
            raise ValueError(NO_KEY_MESSAGE)
        if rate == 0:  # the identity: no random bits drawn (they cost as much as a matmul on a CPU)
            return x, state
        keep = jax.random.bernoulli(key, keep_prob, mask_shape(x.shape, broadcast_axes))
        return jnp.where(keep, x / keep_prob, jnp.zeros_like(x)), state

    return Layer(init, apply, "Dropout")


def mask_shape(shape: tuple[int, ...], broadcast_axes: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with every axis in `broadcast_axes` set to 1, so the mask is shared along it."""
    rank = len(shape)
    shared = {axis % rank for axis in broadcast_axes}
    return tuple(1 if i in shared else d for i, d in enumerate(shape))
