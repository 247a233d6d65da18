"""Pooling against numpy loops (padding as NaN, so padded cells are easy to leave out), and errors."""
import math
import re

import chex
import jax
import numpy as np
import pytest

from fdl.nn.core import ShapeError
from fdl.nn.pooling import (AvgPool, AvgPool1D, AvgPool2D, AvgPool3D, GlobalAvgPool, GlobalMaxPool,
                            MaxPool, MaxPool1D, MaxPool2D)


def reference_pool(x, window, strides, padding, reduce, count_include_pad=False):
    """Explicit loops over output cells; `reduce` is "max" or "avg". x (*spatial, C), float64."""
    ndim = x.ndim - 1
    window = (window,) * ndim if isinstance(window, int) else tuple(window)
    strides = window if strides is None else (strides,) * ndim if isinstance(strides, int) else strides
    if padding == "VALID":
        pads = [(0, 0)] * ndim
    elif padding == "SAME":  # TF: total = max((ceil(n/s) - 1) * s + k - n, 0), low = total // 2
        totals = [max((math.ceil(n / s) - 1) * s + k - n, 0) for n, k, s in zip(x.shape, window, strides)]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(padding, padding)] * ndim if isinstance(padding, int) else list(padding)
    padded = np.pad(np.asarray(x, np.float64), [*pads, (0, 0)], constant_values=np.nan)
    out = [(p - k) // s + 1 for p, k, s in zip(padded.shape, window, strides)]
    y = np.zeros((*out, x.shape[-1]))
    for o in np.ndindex(*out):
        cells = padded[tuple(slice(i * s, i * s + k) for i, s, k in zip(o, strides, window))]
        cells = cells.reshape(-1, x.shape[-1])
        if reduce == "max":
            y[o] = np.nanmax(cells, axis=0)
        else:
            cell_count = len(cells) if count_include_pad else np.sum(~np.isnan(cells), axis=0)
            y[o] = np.nansum(cells, axis=0) / cell_count
    return y


# (make_layer, input_shape, reference_pool arguments: window, strides, padding, reduce, count_include_pad)
POOL_CASES = [
    (lambda: MaxPool1D(2), (7, 3), (2, None, "VALID", "max")),  # the last cell is dropped
    (lambda: MaxPool1D(3, strides=2, padding="SAME"), (7, 2), (3, 2, "SAME", "max")),
    (lambda: MaxPool2D((2, 3), strides=(1, 2), padding=((1, 0), (1, 1))), (5, 6, 2),
     ((2, 3), (1, 2), ((1, 0), (1, 1)), "max")),
    (lambda: MaxPool(2), (4, 5, 2), (2, None, "VALID", "max")),  # generic: ndim from the input
    (lambda: AvgPool1D(3, strides=1, padding=1), (6, 2), (3, 1, 1, "avg", False)),
    (lambda: AvgPool1D(3, strides=1, padding=1, count_include_pad=True), (6, 2), (3, 1, 1, "avg", True)),
    (lambda: AvgPool2D(3, strides=2, padding="SAME"), (6, 5, 2), (3, 2, "SAME", "avg", False)),
    (lambda: AvgPool2D(3, strides=2, padding="SAME", count_include_pad=True), (6, 5, 2),
     (3, 2, "SAME", "avg", True)),
    (lambda: AvgPool((2, 3), strides=1), (4, 5, 1), ((2, 3), 1, "VALID", "avg")),
    (lambda: AvgPool3D(2, padding=1), (3, 4, 4, 2), (2, None, 1, "avg", False)),
]


@pytest.mark.parametrize("make_layer,input_shape,reference", POOL_CASES,
                         ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_pool_matches_numpy_loops(make_layer, input_shape, reference):
    layer = make_layer()
    out_shape, params, state = layer.init(None, input_shape)
    assert params == {} and state == {}
    x = np.random.default_rng(0).normal(size=input_shape).astype(np.float32)
    y, _ = jax.jit(layer.apply)(params, state, x)
    chex.assert_shape(y, out_shape)
    np.testing.assert_allclose(y, reference_pool(x, *reference), rtol=1e-6, atol=1e-6)


def test_avg_pool_padding_hand_computed():
    """x = [0, 1, 2, 3], window 3, stride 1, padding 1: edge windows hold 2 real cells of 3."""
    x = np.arange(4.0, dtype=np.float32)[:, None]
    real_cells, _ = AvgPool1D(3, strides=1, padding=1).apply({}, {}, x)
    every_cell, _ = AvgPool1D(3, strides=1, padding=1, count_include_pad=True).apply({}, {}, x)
    np.testing.assert_allclose(real_cells[:, 0], [0.5, 1, 2, 2.5])
    np.testing.assert_allclose(every_cell[:, 0], [1 / 3, 1, 2, 5 / 3], rtol=1e-6)


@pytest.mark.parametrize("layer,reduce", [(GlobalAvgPool(), np.mean), (GlobalMaxPool(), np.max)])
@pytest.mark.parametrize("input_shape", [(7, 3), (4, 5, 2)])
def test_global_pools(layer, reduce, input_shape):
    x = np.random.default_rng(0).normal(size=input_shape).astype(np.float32)
    out_shape, _, _ = layer.init(None, input_shape)
    y, _ = jax.jit(layer.apply)({}, {}, x)
    assert out_shape == (input_shape[-1],)
    np.testing.assert_allclose(y, reduce(x.reshape(-1, input_shape[-1]), axis=0), rtol=1e-6)


@pytest.mark.parametrize("make,input_shape,message", [
    (lambda: MaxPool1D(2), (40,),
     "MaxPool1D: expected input (length, channels), got (40,) — add a channel axis with Reshape((40, 1))"),
    (lambda: AvgPool1D(2), (28, 28, 1),
     "AvgPool1D: expected input (length, channels), got (28, 28, 1) — use AvgPool2D for 2 spatial axes"),
    (lambda: MaxPool((2, 2)), (8, 1), "MaxPool: expected input (height, width, channels), got (8, 1)"),
    (lambda: MaxPool1D(5), (4, 1),
     "MaxPool1D: window (5,) spans (5,) cells, more than the input (4,) padded to (4,)"),
    (lambda: AvgPool2D(3, padding=((1, 0), (0, 0))), (2, 2, 1), "AvgPool2D: window (3, 3) spans (3, 3) cells"),
    (lambda: MaxPool(2, padding=((1, 1), (1, 1))), (6, 1), "MaxPool: padding ((1, 1), (1, 1)) has 2 entries"),
    (lambda: MaxPool(2, padding=2), (6, 6, 1),
     "MaxPool: padding ((2, 2), (2, 2)) must be smaller than the window"),
    (lambda: GlobalAvgPool(), (5,), "GlobalAvgPool: expected input (*spatial, channels), got (5,) — add a "
                                    "channel axis with Reshape((5, 1))"),
    (lambda: GlobalMaxPool(), (), "GlobalMaxPool: expected input (*spatial, channels), got ()"),
])
def test_shape_errors_at_init(make, input_shape, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        make().init(None, input_shape)


@pytest.mark.parametrize("make,message", [
    (lambda: MaxPool1D(0), "MaxPool1D: window must be a positive int"),
    (lambda: AvgPool2D((2, 0)), "AvgPool2D: window must be a positive int"),
    (lambda: MaxPool2D(2, strides=0), "MaxPool2D: strides must be a positive int"),
    (lambda: AvgPool1D(2, padding="full"), "AvgPool1D: padding must be"),
    (lambda: MaxPool2D((2, 2, 2)), "MaxPool2D: window (2, 2, 2) has 3 entries"),
    (lambda: MaxPool1D(2, padding=2), "MaxPool1D: padding ((2, 2),) must be smaller than the window (2,)"),
    (lambda: AvgPool((3, 3), padding=((1, 1), (0, 3))), "AvgPool: padding ((1, 1), (0, 3)) must be smaller"),
])
def test_argument_errors_in_constructor(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
