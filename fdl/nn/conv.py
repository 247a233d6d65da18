"""Convolutions over one channels-last example: `Conv` and `ConvTranspose`.

Layouts (no batch axis): 1D `(length, channels)`, 2D `(height, width,
channels)`, 3D `(depth, height, width, channels)`. `Conv` is a
cross-correlation (the kernel is not flipped), as in PyTorch, Keras and JAX.

Kernels are HWIO, `w: (*kernel_size, in_channels // groups, features)` (the
JAX/TF/Keras layout). A PyTorch `Conv2d` weight `(features, in_channels //
groups, kh, kw)` becomes `w_torch.permute(2, 3, 1, 0)`.

Padding, here and in `fdl.nn.pooling`, counts cells of the input:
  - "SAME": output = ceil(input / stride); the total padding
    max((output - 1) * stride + (kernel - 1) * dilation + 1 - input, 0) is split
    with `total // 2` before and the rest after (TF, JAX and Keras; PyTorch's
    `padding="same"` agrees where it exists, at stride 1).
  - "VALID": no padding.
  - an int p: p zeros before and after every spatial axis (PyTorch `padding=p`).
  - a sequence of (low, high) pairs, one per spatial axis.
Conv output = (input + low + high - ((kernel - 1) * dilation + 1)) // stride + 1.
"""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from fdl.nn.core import Layer, ShapeError
from fdl.nn.initializers import get_initializer
from fdl.nn.window import (Window, check_fits, check_padding, check_positive, check_rank,
                           explicit_padding, is_count, output_spatial, ranked_constructors,
                           window_for)
from fdl.typing import Shape

__all__ = ["Conv", "Conv1D", "Conv2D", "Conv3D", "ConvTranspose", "ConvTranspose1D",
           "ConvTranspose2D", "ConvTranspose3D", "IMPLEMENTATIONS", "default_implementation"]

IMPLEMENTATIONS = ("auto", "lax", "patches")


def default_implementation() -> str:
    """What `implementation="auto"` means: im2col "patches" on CPU, "lax" elsewhere.

    On CPU, XLA's convolution is slow for the small kernels and channel counts
    of 1D models: a patches conv ran ~4x faster than `lax.conv` for the
    MNIST-1D CNN inside `lax.scan`. Accelerators have fast native convolutions.
    """
    return "patches" if jax.default_backend() == "cpu" else "lax"


# ---- argument checks (constructor time) ---------------------------------------------

def _dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels-last input/output and HWIO kernels, for any number of spatial axes."""
    spatial = tuple(range(1, ndim + 1))
    return lax.ConvDimensionNumbers(lhs_spec=(0, ndim + 1, *spatial),
                                    rhs_spec=(ndim + 1, ndim, *range(ndim)),
                                    out_spec=(0, ndim + 1, *spatial))


def _conv_lax(x, w, window: Window, pads, groups: int):
    """Conv of one example `x: (*spatial, C)` with `w: (*kernel, C // groups, F)` by `lax`."""
    y = lax.conv_general_dilated(x[None], w, window.strides, pads, rhs_dilation=window.dilation,
                                 dimension_numbers=_dimension_numbers(w.ndim - 2),
                                 feature_group_count=groups)
    return y[0]


def _patches(x, window: Window, pads):
    """The windows of `x: (*spatial, C)` as `(*out, prod(kernel), C)`, kernel taps row-major."""
    x = jnp.pad(x, (*pads, (0, 0)))
    out = output_spatial(window, x.shape[:-1], ((0, 0),) * len(pads))
    views = []
    for tap in itertools.product(*(range(k) for k in window.size)):
        start = tuple(t * d for t, d in zip(tap, window.dilation))
        limit = tuple(b + (n - 1) * s + 1 for b, n, s in zip(start, out, window.strides))
        views.append(lax.slice(x, (*start, 0), (*limit, x.shape[-1]), (*window.strides, 1)))
    return jnp.stack(views, axis=-2)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _conv_patches(x, w, window: Window, pads, groups: int):
    """Same numbers as `_conv_lax`, as im2col: strided slices, then one contraction.

    Jitted so that an eager call compiles one program, not one per slice; inside
    a jitted model it is inlined like any other function.
    """
    patches = _patches(x, window, pads)
    *out, taps, channels = patches.shape
    features = w.shape[-1]
    # Channel c is in group c // (C / groups), feature f in group f // (F / groups), as in lax.
    patches = patches.reshape(*out, taps, groups, channels // groups)
    kernel = w.reshape(taps, channels // groups, groups, features // groups)
    return jnp.einsum("...kgc,kcgf->...gf", patches, kernel).reshape(*out, features)


_CONVOLUTIONS = {"lax": _conv_lax, "patches": _conv_patches}


# ---- layers -------------------------------------------------------------------------------

def _check_conv_arguments(kind, features, kernel_size, strides, dilation, groups):
    if not is_count(features, 1):
        raise ValueError(f"{kind}: features must be a positive int, got {features!r}")
    check_positive(kind, "kernel_size", kernel_size)
    check_positive(kind, "strides", strides)
    check_positive(kind, "dilation", dilation)
    if not is_count(groups, 1) or features % groups:
        raise ValueError(f"{kind}: groups must be a positive int dividing features={features}, got {groups!r}")


def _spatial_ndim(ndim: int | None, size) -> int | None:
    """The kind's fixed ndim, else the length of a tuple window, else None (from the input)."""
    if ndim is None and isinstance(size, (tuple, list)):
        return len(size)
    return ndim


def _setup(kind, ndim, features, kernel_size, strides, padding, dilation, groups, w_init, b_init):
    """Constructor checks shared by Conv and ConvTranspose: (ndim, window_of, w_init, b_init)."""
    _check_conv_arguments(kind, features, kernel_size, strides, dilation, groups)
    ndim = _spatial_ndim(ndim, kernel_size)
    window_of = window_for(kind, ndim, "kernel_size", kernel_size, strides, dilation,
                           check_padding(kind, padding))
    return (ndim, window_of, get_initializer(w_init, owner=f"{kind} w_init"),
            get_initializer(b_init, owner=f"{kind} b_init"))


# The one definition of the Conv arguments: `ranked_constructors` binds (kind, ndim) and
# makes Conv, Conv1D, Conv2D and Conv3D with the rest as their signature; the docstring is Conv's.
def _conv(kind: str, ndim: int | None, features: int, kernel_size, *, strides=1, padding="SAME",
          dilation=1, groups: int = 1, use_bias: bool = True, w_init="lecun_normal",
          b_init="zeros", implementation: str = "auto", dtype=jnp.float32) -> Layer:
    """N-dimensional convolution (cross-correlation) of one channels-last example.

    y[o, f] = b[f] + sum over taps t and channels c of its group of
    x[o * strides + t * dilation - low_pad, c] * w[t, c, f].

    Args:
      features: output channels.
      kernel_size: an int, or one int per spatial axis. A tuple fixes the number
        of spatial axes; an int takes it from the input (rank - 1) at init.
      strides: step between windows, in cells (int or per axis).
      padding: "SAME", "VALID", an int, or (low, high) pairs; see the module doc.
      dilation: distance between kernel taps, in cells (int or per axis).
      groups: split channels and features into this many independent groups
        (groups = in_channels is a depthwise conv); must divide features here
        and the input channels at init.
      use_bias: add `b`.
      w_init, b_init: initializer names or callables (see fdl.nn.initializers).
      implementation: "lax" (`lax.conv_general_dilated`), "patches" (im2col:
        strided slices, then one einsum) or "auto" (`default_implementation()`).
        Both give the same numbers.
      dtype: the params' dtype.

    Params: `w: (*kernel_size, in_channels // groups, features)` (HWIO), `b: (features,)`.
    Input `(*spatial, in_channels)`; output `(*out_spatial, features)` with
    out = (in + low + high - ((kernel - 1) * dilation + 1)) // strides + 1.

    Raises:
      ValueError: a bad argument, in the constructor.
      ShapeError: at init, a wrong input rank, channels not divisible by groups,
        or a kernel spanning more cells than the padded input.

    Example:
      >>> layer = Conv1D(25, 5)
      >>> out_shape, params, state = layer.init(jax.random.key(0), (40, 1))
      >>> out_shape, params["w"].shape
      ((40, 25), (5, 1, 25))
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{kind}: implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    ndim, window_of, w_initializer, b_initializer = _setup(
        kind, ndim, features, kernel_size, strides, padding, dilation, groups, w_init, b_init)

    def init(key, input_shape):
        check_rank(kind, "Conv", input_shape, ndim)
        window = window_of(input_shape)
        *spatial, channels = input_shape
        if channels % groups:
            raise ShapeError(kind, f"input channels {channels} are not divisible by groups={groups} — "
                                   "use a channel count that is a multiple of groups")
        pads = explicit_padding(window, spatial)
        check_fits(kind, "kernel_size", window, spatial, pads)
        w_key, b_key = jax.random.split(key)
        params = {"w": w_initializer(w_key, (*window.size, channels // groups, features), dtype)}
        if use_bias:
            params["b"] = b_initializer(b_key, (features,), dtype)
        return (*output_spatial(window, spatial, pads), features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        window = window_of(x.shape)
        compute_dtype = jnp.result_type(x, params["w"])
        chosen = default_implementation() if implementation == "auto" else implementation
        y = _CONVOLUTIONS[chosen](x.astype(compute_dtype), params["w"].astype(compute_dtype), window,
                                  explicit_padding(window, x.shape[:-1]), groups)
        if use_bias:
            y = y + params["b"]
        return y, state

    return Layer(init, apply, kind)


Conv, Conv1D, Conv2D, Conv3D = ranked_constructors(
    _conv, "Conv", "`Conv` over inputs {layout}; same arguments and params.")


def _transposed_output(window: Window, spatial_shape: Shape) -> Shape:
    """ConvTranspose output per axis: SAME in * s; VALID (in - 1) * s + span; pairs crop that."""
    pads = (window.padding,) * len(spatial_shape) if isinstance(window.padding, str) else window.padding
    sizes = []
    for n, s, span, pad in zip(spatial_shape, window.strides, window.span, pads):
        full = (n - 1) * s + span
        sizes.append(n * s if pad == "SAME" else full if pad == "VALID" else full - sum(pad))
    return tuple(sizes)


def _conv_transpose_lax(x, w, window: Window):
    """The adjoint of `_conv_lax` (groups=1) for an output of `_transposed_output` cells.

    It is the gradient of that Conv wrt its input: a stride-1 conv of `x`
    dilated by `strides`, with the kernel flipped and its in/out axes swapped,
    padded so that the "full" result is cropped by the Conv's own padding.
    """
    spatial = x.shape[:-1]
    out = _transposed_output(window, spatial)
    pads = []
    for n, m, s, span, (low, _) in zip(spatial, out, window.strides, window.span,
                                       explicit_padding(window, out)):
        full = (n - 1) * s + span
        cropped_end = full - low - m  # negative: zeros appended (SAME with span < stride)
        pads.append((span - 1 - low, span - 1 - cropped_end))
    ndim = len(spatial)
    numbers = _dimension_numbers(ndim)._replace(rhs_spec=(ndim, ndim + 1, *range(ndim)))
    y = lax.conv_general_dilated(x[None], jnp.flip(w, tuple(range(ndim))), (1,) * ndim, pads,
                                 lhs_dilation=window.strides, rhs_dilation=window.dilation,
                                 dimension_numbers=numbers)
    return y[0]


# As `_conv`: the one definition of ConvTranspose{,1D,2D,3D}; the docstring is ConvTranspose's.
def _conv_transpose(kind: str, ndim: int | None, features: int, kernel_size, *, strides=1,
                    padding="SAME", dilation=1, use_bias: bool = True, w_init="lecun_normal",
                    b_init="zeros", dtype=jnp.float32) -> Layer:
    """Transposed convolution: the gradient of `Conv` wrt its input (plus a bias).

    `ConvTranspose(F, k, strides=s, padding=p)` with kernel `w` maps an input
    `(*n, C)` to `(*m, F)` by the adjoint of the `Conv(C, k, strides=s,
    padding=p)` that maps `(*m, F)` to `(*n, C)` with the same `w`:
    <conv(u, w), x> = <u, conv_transpose(x, w)>. Each input cell scatters
    `w[t] @ x[i]` to output cell `i * strides + t * dilation - low_pad`.

    Kernel layout: `w: (*kernel_size, features, in_channels)` — the HWIO kernel
    of that Conv, which is Keras' `Conv2DTranspose` layout. A PyTorch
    `ConvTranspose2d` weight `(in_channels, features, kh, kw)` becomes
    `w_torch.permute(2, 3, 1, 0)`. The initializer draws it as `(*kernel_size,
    in_channels, features)` (fan-in = input channels, as for Conv) and swaps
    the last two axes.

    Padding (per spatial axis, n input cells, span = (kernel - 1) * dilation + 1):
      - "SAME": output n * strides (Keras; the Conv's "SAME" padding is cropped).
      - "VALID": output (n - 1) * strides + span, every contribution kept.
      - an int p or (low, high): output (n - 1) * strides + span - low - high,
        cropping low cells at the start and high at the end — PyTorch's
        `padding`. PyTorch's `output_padding=q` is `(p, p - q)` for q <= p.

    Args:
      features: output channels.
      kernel_size: an int, or one int per spatial axis (a tuple fixes the
        number of spatial axes; an int takes it from the input at init).
      strides: upsampling factor, in cells (int or per axis).
      padding: see above.
      dilation: distance between kernel taps, in cells.
      use_bias: add `b: (features,)`.
      w_init, b_init: initializer names or callables.
      dtype: the params' dtype.

    Raises:
      ValueError: a bad argument, in the constructor.
      ShapeError: at init, a wrong input rank or padding that crops the whole output.
    """
    ndim, window_of, w_initializer, b_initializer = _setup(
        kind, ndim, features, kernel_size, strides, padding, dilation, 1, w_init, b_init)

    def init(key, input_shape):
        check_rank(kind, "ConvTranspose", input_shape, ndim)
        window = window_of(input_shape)
        *spatial, channels = input_shape
        out = _transposed_output(window, spatial)
        if min(out) < 1:
            raise ShapeError(kind, f"padding {window.padding} crops the whole output of input "
                                   f"{tuple(spatial)} (output {out}) — use less padding")
        w_key, b_key = jax.random.split(key)
        # Drawn as (*kernel, in_channels, features) so fan-in counts input channels, as for Conv.
        w = w_initializer(w_key, (*window.size, channels, features), dtype)
        params = {"w": jnp.swapaxes(w, -1, -2)}
        if use_bias:
            params["b"] = b_initializer(b_key, (features,), dtype)
        return (*out, features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        compute_dtype = jnp.result_type(x, params["w"])
        y = _conv_transpose_lax(x.astype(compute_dtype), params["w"].astype(compute_dtype),
                                window_of(x.shape))
        if use_bias:
            y = y + params["b"]
        return y, state

    return Layer(init, apply, kind)


ConvTranspose, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D = ranked_constructors(
    _conv_transpose, "ConvTranspose", "`ConvTranspose` over inputs {layout}; same arguments and params.")
