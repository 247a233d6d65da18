"""Per-example reshaping layers: Flatten and Reshape."""
from __future__ import annotations

import math

from fdl.nn.core import Layer, ShapeError

__all__ = ["Flatten", "Reshape"]


def _reshape_layer(kind: str, target_shape) -> Layer:
    def init(key, input_shape):
        del key
        size = math.prod(input_shape)
        shape = target_shape(input_shape)
        if shape.count(-1) > 1:
            raise ShapeError(kind, f"at most one -1 allowed, got {shape}")
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if known == 0 or size % known:
                raise ShapeError(kind, f"cannot reshape {input_shape} ({size} values) to {shape}")
            shape = tuple(size // known if d == -1 else d for d in shape)
        elif known != size:
            raise ShapeError(kind, f"cannot reshape {input_shape} ({size} values) to {shape} "
                             f"({known} values) — the sizes must match")
        return shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        del params, key, train
        return x.reshape(target_shape(x.shape)), state

    return Layer(init, apply, kind)


def Flatten() -> Layer:
    """(d1, d2, ...) -> (d1 * d2 * ...,) for one example."""
    return _reshape_layer("Flatten", lambda shape: (-1,))


def Reshape(shape: tuple[int, ...]) -> Layer:
    """Reshapes one example to `shape` (one axis may be -1)."""
    shape = tuple(shape)
    return _reshape_layer("Reshape", lambda _: shape)
