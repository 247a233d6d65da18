"""Conv and ConvTranspose against numpy loop references, hand-computed values and their errors.

Tolerances: float32 layers against float64 numpy references with O(1) values
and at most ~50 products per output, so 1e-5 covers float32 rounding.
"""
import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdl.nn.combinators import serial
from fdl.nn.conv import (Conv, Conv1D, Conv2D, Conv3D, ConvTranspose, ConvTranspose1D,
                         ConvTranspose2D, default_implementation)
from fdl.nn.core import ShapeError

TOLERANCE = dict(rtol=1e-5, atol=1e-5)
IMPLEMENTATIONS = ("lax", "patches")


def numpy_normal(key, shape, dtype):
    """A seeded normal initializer that compiles nothing (keeps the tests fast)."""
    del key
    return jnp.asarray(np.random.default_rng(sum(shape)).normal(size=shape), dtype)


def reference_padding(spatial, kernel, strides, padding, dilation):
    """(low, high) per axis; "SAME" as TF/JAX: total = max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0)."""
    if padding == "VALID":
        return [(0, 0)] * len(spatial)
    if padding == "SAME":
        pads = []
        for n, k, s, d in zip(spatial, kernel, strides, dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * len(spatial)
    return list(padding)


def per_axis(value, ndim):
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def reference_conv(x, w, strides, padding, dilation, groups):
    """Explicit loops: x (*spatial, C), w (*kernel, C // groups, F) -> (*out, F), float64."""
    ndim = x.ndim - 1
    kernel, (group_channels, features) = w.shape[:ndim], w.shape[ndim:]
    strides, dilation = per_axis(strides, ndim), per_axis(dilation, ndim)
    pads = reference_padding(x.shape[:-1], kernel, strides, padding, dilation)
    padded = np.pad(np.asarray(x, np.float64), [*pads, (0, 0)])
    out = [(p - (k - 1) * d - 1) // s + 1 for p, k, s, d in zip(padded.shape, kernel, strides, dilation)]
    y = np.zeros((*out, features))
    for o in np.ndindex(*out):
        for tap in np.ndindex(*kernel):
            cell = tuple(oi * s + t * d for oi, t, s, d in zip(o, tap, strides, dilation))
            for f in range(features):
                group = f // (features // groups)
                channels = padded[cell][group * group_channels:(group + 1) * group_channels]
                y[o + (f,)] += channels @ w[tap + (slice(None), f)]
    return y


CONV_CASES = [  # (kind, features, kernel_size, input_shape, options)
    (Conv1D, 3, 3, (9, 4), {}),
    (Conv1D, 3, 3, (9, 4), dict(strides=2)),
    (Conv1D, 2, 4, (10, 3), dict(strides=3, padding="VALID")),
    (Conv1D, 3, 3, (9, 2), dict(dilation=2)),
    (Conv1D, 3, 3, (9, 2), dict(strides=2, padding=((2, 1),))),
    (Conv1D, 6, 3, (8, 4), dict(groups=2, padding=1)),
    (Conv1D, 4, 2, (7, 4), dict(groups=4, strides=2, padding="VALID")),  # depthwise
    (Conv2D, 3, (3, 2), (6, 7, 2), dict(strides=(2, 1))),
    (Conv2D, 4, 3, (6, 6, 4), dict(padding="VALID", dilation=(2, 1), groups=2)),
    (Conv2D, 2, 2, (5, 5, 3), dict(strides=2, padding=((1, 0), (0, 2)))),
    (Conv, 2, 3, (6, 5, 2), dict(strides=2)),  # generic: ndim from the input
    (Conv3D, 4, (2, 3, 2), (4, 5, 3, 2), dict(strides=(1, 2, 1), groups=2)),
]


def apply_each_implementation(make_layer, params, x):
    """{implementation: y}, all computed in one compiled call."""
    layers = {name: make_layer(name) for name in IMPLEMENTATIONS}
    return jax.jit(lambda p, x: {name: layer.apply(p, {}, x)[0] for name, layer in layers.items()})(params, x)


@pytest.mark.parametrize("kind,features,kernel_size,input_shape,options", CONV_CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CONV_CASES)])
def test_conv_matches_numpy_loops(kind, features, kernel_size, input_shape, options):
    def make_layer(implementation):
        return kind(features, kernel_size, implementation=implementation, w_init=numpy_normal,
                    b_init=numpy_normal, **options)

    out_shape, params, _ = make_layer("auto").init(jax.random.key(0), input_shape)
    x = np.random.default_rng(1).normal(size=input_shape).astype(np.float32)
    expected = reference_conv(x, np.asarray(params["w"]), options.get("strides", 1),
                              options.get("padding", "SAME"), options.get("dilation", 1),
                              options.get("groups", 1)) + np.asarray(params["b"])
    for implementation, y in apply_each_implementation(make_layer, params, x).items():
        chex.assert_shape(y, out_shape)
        np.testing.assert_allclose(y, expected, **TOLERANCE, err_msg=implementation)


@pytest.mark.parametrize("kernel,options,expected", [
    ([1, 0, -1], dict(padding="VALID"), [-2, -2]),
    ([1, 0, -1], dict(padding="SAME"), [-2, -2, -2, 3]),       # pads (1, 1)
    ([1, 0, -1], dict(padding="SAME", strides=2), [-2, 3]),    # pads (0, 1): the odd cell after
    ([1, -1], dict(padding="VALID", dilation=2), [-2, -2]),    # x[i] - x[i + 2]
    ([1, 1], dict(padding=((1, 0),)), [1, 3, 5, 7]),
])
def test_conv_hand_computed_1d(kernel, options, expected):
    """x = [1, 2, 3, 4]; cross-correlation y[i] = sum_t x[i * s + t * d - low] * w[t], plus b = 0.5."""
    def make_layer(implementation):
        return Conv1D(1, len(kernel), implementation=implementation, w_init=numpy_normal, **options)

    out_shape, _, _ = make_layer("auto").init(jax.random.key(0), (4, 1))
    params = {"w": np.asarray(kernel, np.float32).reshape(-1, 1, 1), "b": np.array([0.5], np.float32)}
    x = np.arange(1.0, 5.0, dtype=np.float32)[:, None]
    for implementation, y in apply_each_implementation(make_layer, params, x).items():
        chex.assert_shape(y, out_shape)
        np.testing.assert_allclose(y[:, 0], np.asarray(expected) + 0.5, err_msg=implementation)


def test_auto_implementation_is_patches_on_cpu():
    assert jax.default_backend() == "cpu"
    assert default_implementation() == "patches"


def test_conv_params_and_output_shapes():
    layer = Conv2D(8, (3, 5), groups=2, strides=2, w_init=numpy_normal)
    out_shape, params, state = layer.init(jax.random.key(0), (9, 10, 4))
    assert out_shape == (5, 5, 8)  # SAME: ceil(in / stride)
    chex.assert_shape(params["w"], (3, 5, 2, 8))
    chex.assert_shape(params["b"], (8,))
    assert state == {}
    layer = Conv(5, 3, padding="VALID", use_bias=False, w_init=numpy_normal)
    out_shape, params, _ = layer.init(jax.random.key(0), (6, 6, 6, 2))
    assert out_shape == (4, 4, 4, 5) and set(params) == {"w"}


def test_conv_default_child_names():
    layers = serial(Conv1D(4, 3, w_init=numpy_normal), ConvTranspose1D(4, 3, w_init=numpy_normal),
                    Conv(2, 3, w_init=numpy_normal))
    _, params, _ = layers.init(jax.random.key(0), (8, 1))
    assert set(params) == {"conv1d_0", "conv_transpose1d_1", "conv_2"}


@pytest.mark.parametrize("make,input_shape,message", [
    (lambda: Conv1D(25, 5), (40,),
     "Conv1D: expected input (length, channels), got (40,) — add a channel axis with Reshape((40, 1))"),
    (lambda: Conv1D(25, 5), (28, 28, 1),
     "Conv1D: expected input (length, channels), got (28, 28, 1) — use Conv2D for 2 spatial axes"),
    (lambda: Conv2D(4, 3), (28, 28),
     "Conv2D: expected input (height, width, channels), got (28, 28) — add a channel axis with "
     "Reshape((28, 28, 1))"),
    (lambda: Conv(4, 3), (40,), "Conv: expected input (*spatial, channels), got (40,)"),
    (lambda: Conv(4, (3, 3)), (40, 2), "Conv: expected input (height, width, channels), got (40, 2)"),
    (lambda: Conv1D(4, 3, groups=2), (8, 3), "Conv1D: input channels 3 are not divisible by groups=2"),
    (lambda: Conv1D(4, 5, padding="VALID"), (4, 1),
     "Conv1D: kernel_size (5,) spans (5,) cells, more than the input (4,) padded to (4,)"),
    (lambda: Conv1D(4, 3, dilation=3, padding=1), (4, 1),
     "Conv1D: kernel_size (3,) spans (7,) cells, more than the input (4,) padded to (6,)"),
    (lambda: Conv(4, 3, strides=(1, 2)), (8, 1),
     "Conv: strides (1, 2) has 2 entries, expected one per spatial axis (1)"),
    (lambda: Conv(4, 3, padding=((1, 1), (1, 1))), (8, 1), "Conv: padding ((1, 1), (1, 1)) has 2 entries"),
    (lambda: ConvTranspose1D(4, 3), (8,), "ConvTranspose1D: expected input (length, channels), got (8,)"),
    (lambda: ConvTranspose1D(4, 2, padding=2), (1, 1),
     "ConvTranspose1D: padding ((2, 2),) crops the whole output of input (1,)"),
])
def test_shape_errors_at_init(make, input_shape, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        make().init(jax.random.key(0), input_shape)


def test_shape_error_names_its_place_in_the_model():
    with pytest.raises(ShapeError, match=re.escape("serial[1] Conv1D: expected input (length, channels)")):
        serial(Conv2D(2, 3, w_init=numpy_normal), Conv1D(2, 3)).init(jax.random.key(0), (8, 8, 1))


@pytest.mark.parametrize("make,message", [
    (lambda: Conv1D(0, 3), "Conv1D: features must be a positive int, got 0"),
    (lambda: Conv1D(2.5, 3), "Conv1D: features must be a positive int"),
    (lambda: Conv1D(4, 0), "Conv1D: kernel_size must be a positive int"),
    (lambda: Conv1D(4, 3, strides=0), "Conv1D: strides must be a positive int"),
    (lambda: Conv2D(4, 3, strides=(1, 0)), "Conv2D: strides must be a positive int"),
    (lambda: Conv1D(4, 3, dilation=0), "Conv1D: dilation must be a positive int"),
    (lambda: Conv1D(4, 3, padding="same-ish"), "Conv1D: padding must be"),
    (lambda: Conv1D(4, 3, padding=-1), "Conv1D: padding must be"),
    (lambda: Conv1D(4, 3, padding=((1, -1),)), "Conv1D: padding must be"),
    (lambda: Conv1D(4, 3, padding=((1, 1), (0, 0))), "Conv1D: padding ((1, 1), (0, 0)) has 2 entries"),
    (lambda: Conv2D(4, (3, 3, 3)), "Conv2D: kernel_size (3, 3, 3) has 3 entries"),
    (lambda: Conv(4, (3, 3), dilation=(1, 2, 1)), "Conv: dilation (1, 2, 1) has 3 entries"),
    (lambda: Conv1D(4, 3, groups=3), "Conv1D: groups must be a positive int dividing features=4"),
    (lambda: Conv1D(4, 3, implementation="fft"), "Conv1D: implementation must be one of"),
    (lambda: Conv1D(4, 3, w_init="he_nromal"), "Conv1D w_init: unknown initializer 'he_nromal'"),
    (lambda: ConvTranspose2D(0, 3), "ConvTranspose2D: features must be a positive int"),
    (lambda: ConvTranspose(4, 3, strides=0), "ConvTranspose: strides must be a positive int"),
    (lambda: ConvTranspose1D(4, 3, padding="full"), "ConvTranspose1D: padding must be"),
])
def test_argument_errors_in_constructor(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


# ---- ConvTranspose -----------------------------------------------------------------------------

def reference_conv_transpose(x, w, strides, padding, dilation):
    """Scatter-add: input cell i adds w[t] @ x[i] at i * s + t * d of the full output, then crop.

    x (*n, C), w (*kernel, F, C). "SAME" keeps n * s cells starting at the low
    padding the Conv would use on an input of n * s cells; "VALID" keeps all;
    (low, high) crops low cells at the start and high at the end.
    """
    ndim = x.ndim - 1
    kernel, features = w.shape[:ndim], w.shape[ndim]
    strides, dilation = per_axis(strides, ndim), per_axis(dilation, ndim)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    full = np.zeros([(n - 1) * s + span for n, s, span in zip(x.shape, strides, spans)] + [features])
    for i in np.ndindex(*x.shape[:-1]):
        for tap in np.ndindex(*kernel):
            cell = tuple(ii * s + t * d for ii, t, s, d in zip(i, tap, strides, dilation))
            full[cell] += w[tap] @ x[i]
    if padding == "SAME":
        sizes = [n * s for n, s in zip(x.shape, strides)]
        lows = [low for low, _ in reference_padding(sizes, kernel, strides, "SAME", dilation)]
    else:
        pads = reference_padding(x.shape[:-1], kernel, strides, padding, dilation)
        lows = [low for low, _ in pads]
        sizes = [f - low - high for f, (low, high) in zip(full.shape, pads)]
    grow = [(0, max(low + m - f, 0)) for low, m, f in zip(lows, sizes, full.shape)]  # SAME, span < stride
    full = np.pad(full, grow + [(0, 0)])
    return full[tuple(slice(low, low + m) for low, m in zip(lows, sizes))]


TRANSPOSE_CASES = [  # (kind, features, kernel_size, input_shape, options)
    (ConvTranspose1D, 3, 3, (5, 2), dict(strides=2)),
    (ConvTranspose1D, 2, 2, (4, 3), dict(strides=3)),                      # SAME with span < stride
    (ConvTranspose1D, 2, 4, (4, 2), dict(strides=2, padding="VALID")),
    (ConvTranspose1D, 3, 3, (5, 2), dict(strides=2, padding=1, dilation=2)),
    (ConvTranspose2D, 2, (3, 2), (3, 4, 2), dict(strides=(2, 1))),
    (ConvTranspose2D, 3, 3, (3, 3, 2), dict(strides=2, padding=((1, 0), (0, 2)))),
    (ConvTranspose, 2, (2, 2, 2), (2, 3, 2, 2), dict(strides=2, padding="VALID")),
]


@pytest.mark.parametrize("kind,features,kernel_size,input_shape,options", TRANSPOSE_CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(TRANSPOSE_CASES)])
def test_conv_transpose_matches_scatter_add(kind, features, kernel_size, input_shape, options):
    layer = kind(features, kernel_size, w_init=numpy_normal, b_init=numpy_normal, **options)
    out_shape, params, _ = layer.init(jax.random.key(0), input_shape)
    x = np.random.default_rng(1).normal(size=input_shape).astype(np.float32)
    y, _ = jax.jit(layer.apply)(params, {}, x)
    chex.assert_shape(y, out_shape)
    expected = reference_conv_transpose(x, np.asarray(params["w"], np.float64),
                                        options.get("strides", 1), options.get("padding", "SAME"),
                                        options.get("dilation", 1)) + np.asarray(params["b"])
    np.testing.assert_allclose(y, expected, **TOLERANCE)


@pytest.mark.parametrize("padding,expected", [
    ("SAME", [1, 10, 102, 20]),         # Keras Conv1DTranspose: n * stride cells
    ("VALID", [1, 10, 102, 20, 200]),   # (n - 1) * stride + kernel
    (1, [10, 102, 20]),                 # PyTorch ConvTranspose1d(padding=1)
])
def test_conv_transpose_hand_computed_1d(padding, expected):
    """x = [1, 2], w = [1, 10, 100], stride 2: full output [1, 10, 100 + 2, 20, 200]."""
    layer = ConvTranspose1D(1, 3, strides=2, padding=padding, use_bias=False, w_init=numpy_normal)
    out_shape, _, _ = layer.init(jax.random.key(0), (2, 1))
    params = {"w": np.array([1.0, 10.0, 100.0], np.float32).reshape(3, 1, 1)}
    y, _ = jax.jit(layer.apply)(params, {}, np.array([[1.0], [2.0]], np.float32))
    assert out_shape == (len(expected), 1)
    np.testing.assert_allclose(y[:, 0], expected)


@pytest.mark.parametrize("kernel_size,input_shape,options", [
    (3, (5, 2), dict(strides=2)),
    (2, (4, 2), dict(strides=3)),
    (3, (4, 3), dict(strides=2, padding=((2, 0),), dilation=2)),
    ((3, 2), (3, 4, 2), dict(strides=(2, 3), padding="VALID")),
    (3, (3, 3, 2), dict(strides=2, padding=1)),
])
def test_conv_transpose_is_the_adjoint_of_conv(kernel_size, input_shape, options):
    """<conv(u, w), x> == <u, conv_transpose(x, w)> with the same w: (*kernel, features, channels)."""
    features, channels = 3, input_shape[-1]
    transpose = ConvTranspose(features, kernel_size, use_bias=False, w_init=numpy_normal, **options)
    out_shape, params, _ = transpose.init(jax.random.key(0), input_shape)
    conv = Conv(channels, kernel_size, use_bias=False, w_init=numpy_normal, **options)
    assert conv.init(jax.random.key(0), out_shape)[0] == input_shape
    rng = np.random.default_rng(1)
    x, u = rng.normal(size=input_shape), rng.normal(size=out_shape)

    @jax.jit
    def inner_products(params, x, u):
        return (jnp.vdot(conv.apply(params, {}, u)[0], x), jnp.vdot(u, transpose.apply(params, {}, x)[0]))

    forward, backward = inner_products(params, x.astype(np.float32), u.astype(np.float32))
    np.testing.assert_allclose(forward, backward, rtol=1e-5)
