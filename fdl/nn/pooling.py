"""Pooling over one channels-last example: MaxPool, AvgPool and global pools.

Layouts as in `fdl.nn.conv`: `(length, channels)`, `(height, width,
channels)`, `(depth, height, width, channels)`; channels are pooled
independently. Padding is "VALID" by default and means the same as for Conv
("SAME", "VALID", an int, or (low, high) pairs per spatial axis); explicit
padding must be smaller than the window. Padded cells never count:
`MaxPool` pads with -inf (as PyTorch), and `AvgPool` divides by the number of
real cells in each window unless `count_include_pad=True` (Keras/TF
behaviour by default; PyTorch's default is `count_include_pad=True`).
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax import lax

from fdl.nn.core import Layer
from fdl.nn.window import (Window, check_fits, check_padding, check_positive, check_rank,
                           explicit_padding, output_spatial, ranked_constructors, window_for)

__all__ = ["MaxPool", "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool", "AvgPool1D", "AvgPool2D",
           "AvgPool3D", "GlobalAvgPool", "GlobalMaxPool"]


def _reduce_window(x, init_value, operation, window: Window, pads):
    """`operation` over every window of `x: (*spatial, C)`, per channel; padding is `init_value`."""
    return lax.reduce_window(x, np.array(init_value, x.dtype), operation, (*window.size, 1),
                             (*window.strides, 1), (*pads, (0, 0)))


def _real_cells(window: Window, spatial_shape, pads) -> np.ndarray:
    """`(*out, 1)`: how many input (not padding) cells each window covers."""
    per_axis = []
    for n, k, s, (low, high) in zip(spatial_shape, window.size, window.strides, pads):
        starts = np.arange((n + low + high - k) // s + 1) * s - low
        per_axis.append(np.minimum(starts + k, n) - np.maximum(starts, 0))
    return functools.reduce(np.multiply.outer, per_axis)[..., None]


def _max_pool(x, window: Window, pads):
    return _reduce_window(x, -np.inf, lax.max, window, pads)


def _avg_pool(x, window: Window, pads, *, count_include_pad: bool):
    total = _reduce_window(x, 0, lax.add, window, pads)
    if count_include_pad:
        return total / np.prod(window.size)
    return total / _real_cells(window, x.shape[:-1], pads).astype(x.dtype)


def _pool(kind: str, family: str, ndim: int | None, window, strides, padding, reduce) -> Layer:
    strides = window if strides is None else strides
    check_positive(kind, "window", window)
    check_positive(kind, "strides", strides)
    if ndim is None and isinstance(window, (tuple, list)):
        ndim = len(window)
    window_of = window_for(kind, ndim, "window", window, strides, 1, check_padding(kind, padding),
                           pad_below_size=True)

    def init(key, input_shape):
        del key
        check_rank(kind, family, input_shape, ndim)
        geometry = window_of(input_shape)
        spatial = input_shape[:-1]
        pads = explicit_padding(geometry, spatial)
        check_fits(kind, "window", geometry, spatial, pads)
        return (*output_spatial(geometry, spatial, pads), input_shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        del params, key, train
        geometry = window_of(x.shape)
        return reduce(x, geometry, explicit_padding(geometry, x.shape[:-1])), state

    return Layer(init, apply, kind)


# The one definition of each pool's arguments: `ranked_constructors` binds (kind, ndim) and
# makes MaxPool, MaxPool1D, MaxPool2D and MaxPool3D (and the AvgPools) from the rest.
def _max_pool_layer(kind: str, ndim: int | None, window, *, strides=None, padding="VALID") -> Layer:
    """The maximum of each window, per channel.

    Args:
      window: an int, or one int per spatial axis (a tuple fixes the number of
        spatial axes; an int takes it from the input at init).
      strides: step between windows, in cells; None means `window`
        (non-overlapping windows, as Keras and PyTorch).
      padding: "VALID" (default), "SAME", an int or (low, high) pairs, padded
        with -inf so padding never wins.

    Input `(*spatial, channels)`; output `(*out_spatial, channels)` with
    out = (in + low + high - window) // strides + 1.

    Raises:
      ValueError: a bad argument, in the constructor.
      ShapeError: at init, a wrong input rank or a window larger than the padded input.
    """
    return _pool(kind, "MaxPool", ndim, window, strides, padding, _max_pool)


def _avg_pool_layer(kind: str, ndim: int | None, window, *, strides=None, padding="VALID",
                    count_include_pad: bool = False) -> Layer:
    """The mean of each window, per channel.

    Args:
      window, strides, padding: as for `MaxPool`; padding adds zeros.
      count_include_pad: divide every window's sum by the full window size
        (PyTorch's default). False (the default, as Keras/TF) divides by the
        number of real, non-padded cells in that window.

    Input `(*spatial, channels)`; output `(*out_spatial, channels)`.

    Raises:
      ValueError: a bad argument, in the constructor.
      ShapeError: at init, a wrong input rank or a window larger than the padded input.
    """
    reduce = functools.partial(_avg_pool, count_include_pad=count_include_pad)
    return _pool(kind, "AvgPool", ndim, window, strides, padding, reduce)


MaxPool, MaxPool1D, MaxPool2D, MaxPool3D = ranked_constructors(
    _max_pool_layer, "MaxPool", "`MaxPool` over inputs {layout}; same arguments.")
AvgPool, AvgPool1D, AvgPool2D, AvgPool3D = ranked_constructors(
    _avg_pool_layer, "AvgPool", "`AvgPool` over inputs {layout}; same arguments.")


def _global_pool(kind: str, reduce) -> Layer:
    def init(key, input_shape):
        del key
        check_rank(kind, None, input_shape, None)
        return (input_shape[-1],), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        del params, key, train
        return reduce(x, axis=tuple(range(x.ndim - 1))), state

    return Layer(init, apply, kind)


def GlobalAvgPool() -> Layer:
    """The mean over every spatial axis: `(*spatial, channels)` -> `(channels,)`."""
    return _global_pool("GlobalAvgPool", jnp.mean)


def GlobalMaxPool() -> Layer:
    """The maximum over every spatial axis: `(*spatial, channels)` -> `(channels,)`."""
    return _global_pool("GlobalMaxPool", jnp.max)
