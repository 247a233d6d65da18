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
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fdl.nn.core import Layer, ShapeError, expect_rank
from fdl.nn.initializers import get_initializer
from fdl.typing import Shape

IMPLEMENTATIONS = ("auto", "lax", "patches")
_LAYOUTS = {1: "(length, channels)", 2: "(height, width, channels)", 3: "(depth, height, width, channels)"}

Padding = str | tuple[tuple[int, int], ...]


class Window(NamedTuple):
    """A sliding window's geometry: one entry per spatial axis, in cells."""

    size: tuple[int, ...]  # kernel or pooling window
    strides: tuple[int, ...]
    dilation: tuple[int, ...]  # distance between the window's taps
    padding: Padding  # "SAME", "VALID" or (low, high) per spatial axis

    @property
    def span(self) -> tuple[int, ...]:
        """Input cells one window covers: (size - 1) * dilation + 1."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.size, self.dilation))


def default_implementation() -> str:
    """What `implementation="auto"` means: im2col "patches" on CPU, "lax" elsewhere.

    On CPU, XLA's convolution is slow for the small kernels and channel counts
    of 1D models: a patches conv ran ~4x faster than `lax.conv` for the
    MNIST-1D CNN inside `lax.scan`. Accelerators have fast native convolutions.
    """
    return "patches" if jax.default_backend() == "cpu" else "lax"


# ---- argument checks (constructor time) ---------------------------------------------

def _argument_error(kind: str, detail: str) -> ValueError:
    return ValueError(f"{kind}: {detail}")


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_positive(kind: str, name: str, value) -> None:
    """Raises ValueError unless `value` is a positive int or a non-empty sequence of them."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(_is_count(v, 1) for v in values):
        raise ValueError(f"{kind}: {name} must be a positive int or a tuple of them, got {value!r}")


def _is_pad_pair(pair) -> bool:
    return isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_count(v, 0) for v in pair)


def check_padding(kind: str, padding) -> str | int | tuple[tuple[int, int], ...]:
    """`padding` validated: "SAME"/"VALID" (any case), an int >= 0, or (low, high) pairs >= 0."""
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
        return padding.upper()
    if _is_count(padding, 0):
        return padding
    if isinstance(padding, (tuple, list)) and padding and all(_is_pad_pair(p) for p in padding):
        return tuple((lo, hi) for lo, hi in padding)
    raise ValueError(f'{kind}: padding must be "SAME", "VALID", an int >= 0 or a sequence of '
                     f"(low, high) pairs >= 0, one per spatial axis, got {padding!r}")


def make_window(kind: str, ndim: int, size_name: str, size, strides, dilation, padding,
                *, error: Callable[[str, str], Exception] = _argument_error,
                pad_below_size: bool = False) -> Window:
    """A Window with ints repeated over `ndim` spatial axes.

    Args:
      kind: the layer's display name, for errors.
      ndim: the number of spatial axes.
      size_name: what the window is called in errors: "kernel_size", "window".
      size, strides, dilation: ints or `ndim`-tuples, already checked positive.
      padding: the output of `check_padding`.
      error: `error(kind, detail)` builds the exception for a tuple of the wrong
        length: a ValueError in a constructor, a ShapeError at init (where the
        input's rank gave `ndim`).
      pad_below_size: require explicit padding < size (pooling: a window of
        padding only has no value).
    """
    def per_axis(name, value):
        if isinstance(value, int):
            return (value,) * ndim
        if len(value) != ndim:
            raise error(kind, f"{name} {tuple(value)} has {len(value)} entries, expected one per "
                              f"spatial axis ({ndim})")
        return tuple(value)

    if isinstance(padding, int):
        padding = ((padding, padding),) * ndim
    window = Window(per_axis(size_name, size), per_axis("strides", strides),
                    per_axis("dilation", dilation),
                    padding if isinstance(padding, str) else per_axis("padding", padding))
    if pad_below_size and not isinstance(padding, str) and any(
            max(pad) >= k for pad, k in zip(window.padding, window.size)):
        raise error(kind, f"padding {window.padding} must be smaller than the {size_name} "
                          f"{window.size} on every axis — a window of padding only has no value")
    return window


def window_for(kind: str, ndim: int | None, size_name: str, size, strides, dilation, padding,
               **options) -> Callable[[Shape], Window]:
    """`window_of(input_shape) -> Window`, checked now when `ndim` is known, else at init."""
    if ndim is not None:
        window = make_window(kind, ndim, size_name, size, strides, dilation, padding, **options)
        return lambda input_shape: window
    return lambda input_shape: make_window(kind, len(input_shape) - 1, size_name, size, strides,
                                           dilation, padding, error=ShapeError, **options)


# ---- shape checks and arithmetic (init time) ----------------------------------------

def spatial_layout(ndim: int | None) -> str:
    """'(height, width, channels)' for ndim 2; '(*spatial, channels)' when unknown."""
    return _LAYOUTS.get(ndim, "(*spatial, channels)")


def check_rank(kind: str, family: str | None, input_shape: Shape, ndim: int | None) -> None:
    """Raises a ShapeError unless the input is `(*spatial, channels)` with `ndim` spatial axes.

    Args:
      kind: the layer's display name, e.g. "Conv1D".
      family: the kind without its dimension, e.g. "Conv", to suggest "use
        Conv2D"; None when there are no per-dimension kinds.
      input_shape: the per-example shape the layer got.
      ndim: the spatial axes it needs; None for any number >= 1.
    """
    rank = len(input_shape)
    expected = ndim if ndim is not None else max(rank - 1, 1)
    if rank == expected:
        fix = f"add a channel axis with Reshape({tuple(input_shape) + (1,)})"
    elif family and rank - 1 in _LAYOUTS:
        fix = f"use {family}{rank - 1}D for {rank - 1} spatial axes"
    else:
        fix = f"reshape it to {spatial_layout(ndim)}"
    expect_rank(kind, input_shape, expected + 1, spatial_layout(ndim), fix)


def same_padding(length: int, span: int, stride: int) -> tuple[int, int]:
    """TF/JAX "SAME" (low, high): output ceil(length / stride), the odd cell after."""
    total = max((-(-length // stride) - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def explicit_padding(window: Window, spatial_shape: Shape) -> tuple[tuple[int, int], ...]:
    """(low, high) cells of padding per spatial axis for an input of `spatial_shape`."""
    if window.padding == "VALID":
        return ((0, 0),) * len(spatial_shape)
    if window.padding == "SAME":
        return tuple(same_padding(n, span, s)
                     for n, span, s in zip(spatial_shape, window.span, window.strides))
    return window.padding


def output_spatial(window: Window, spatial_shape: Shape, pads) -> Shape:
    """Number of window positions along each spatial axis."""
    return tuple((n + lo + hi - span) // s + 1
                 for n, (lo, hi), span, s in zip(spatial_shape, pads, window.span, window.strides))


def check_fits(kind: str, size_name: str, window: Window, spatial_shape: Shape, pads) -> None:
    """Raises a ShapeError if the window spans more cells than the padded input has."""
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial_shape, pads))
    if any(p < span for p, span in zip(padded, window.span)):
        raise ShapeError(kind, f"{size_name} {window.size} spans {window.span} cells, more than the "
                               f"input {tuple(spatial_shape)} padded to {padded} — use a smaller "
                               f'{size_name}, padding="SAME" or a longer input')


# ---- the two implementations ----------------------------------------------------------

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
    if not _is_count(features, 1):
        raise ValueError(f"{kind}: features must be a positive int, got {features!r}")
    check_positive(kind, "kernel_size", kernel_size)
    check_positive(kind, "strides", strides)
    check_positive(kind, "dilation", dilation)
    if not _is_count(groups, 1) or features % groups:
        raise ValueError(f"{kind}: groups must be a positive int dividing features={features}, got {groups!r}")


def _spatial_ndim(ndim: int | None, size) -> int | None:
    """The kind's fixed ndim, else the length of a tuple window, else None (from the input)."""
    if ndim is None and isinstance(size, (tuple, list)):
        return len(size)
    return ndim


def _conv(kind, ndim, features, kernel_size, *, strides, padding, dilation, groups, use_bias,
          w_init, b_init, implementation, dtype) -> Layer:
    _check_conv_arguments(kind, features, kernel_size, strides, dilation, groups)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{kind}: implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    ndim = _spatial_ndim(ndim, kernel_size)
    window_of = window_for(kind, ndim, "kernel_size", kernel_size, strides, dilation,
                           check_padding(kind, padding))
    w_initializer = get_initializer(w_init, owner=f"{kind} w_init")
    b_initializer = get_initializer(b_init, owner=f"{kind} b_init")

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


def Conv(features: int, kernel_size, *, strides=1, padding="SAME", dilation=1, groups: int = 1,
         use_bias: bool = True, w_init="lecun_normal", b_init="zeros", implementation: str = "auto",
         dtype=jnp.float32) -> Layer:
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
    return _conv("Conv", None, features, kernel_size, strides=strides, padding=padding,
                 dilation=dilation, groups=groups, use_bias=use_bias, w_init=w_init, b_init=b_init,
                 implementation=implementation, dtype=dtype)


def _fixed_conv(ndim: int) -> Callable[..., Layer]:
    def conv(features: int, kernel_size, *, strides=1, padding="SAME", dilation=1, groups: int = 1,
             use_bias: bool = True, w_init="lecun_normal", b_init="zeros",
             implementation: str = "auto", dtype=jnp.float32) -> Layer:
        return _conv(f"Conv{ndim}D", ndim, features, kernel_size, strides=strides, padding=padding,
                     dilation=dilation, groups=groups, use_bias=use_bias, w_init=w_init,
                     b_init=b_init, implementation=implementation, dtype=dtype)

    conv.__name__ = conv.__qualname__ = f"Conv{ndim}D"
    conv.__doc__ = f"`Conv` over inputs {_LAYOUTS[ndim]}; same arguments and params."
    return conv


Conv1D = _fixed_conv(1)
Conv2D = _fixed_conv(2)
Conv3D = _fixed_conv(3)


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


def _conv_transpose(kind, ndim, features, kernel_size, *, strides, padding, dilation, use_bias,
                    w_init, b_init, dtype) -> Layer:
    _check_conv_arguments(kind, features, kernel_size, strides, dilation, 1)
    ndim = _spatial_ndim(ndim, kernel_size)
    window_of = window_for(kind, ndim, "kernel_size", kernel_size, strides, dilation,
                           check_padding(kind, padding))
    w_initializer = get_initializer(w_init, owner=f"{kind} w_init")
    b_initializer = get_initializer(b_init, owner=f"{kind} b_init")

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


def ConvTranspose(features: int, kernel_size, *, strides=1, padding="SAME", dilation=1,
                  use_bias: bool = True, w_init="lecun_normal", b_init="zeros",
                  dtype=jnp.float32) -> Layer:
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
    return _conv_transpose("ConvTranspose", None, features, kernel_size, strides=strides,
                           padding=padding, dilation=dilation, use_bias=use_bias, w_init=w_init,
                           b_init=b_init, dtype=dtype)


def _fixed_conv_transpose(ndim: int) -> Callable[..., Layer]:
    def conv_transpose(features: int, kernel_size, *, strides=1, padding="SAME", dilation=1,
                       use_bias: bool = True, w_init="lecun_normal", b_init="zeros",
                       dtype=jnp.float32) -> Layer:
        return _conv_transpose(f"ConvTranspose{ndim}D", ndim, features, kernel_size, strides=strides,
                               padding=padding, dilation=dilation, use_bias=use_bias, w_init=w_init,
                               b_init=b_init, dtype=dtype)

    conv_transpose.__name__ = conv_transpose.__qualname__ = f"ConvTranspose{ndim}D"
    conv_transpose.__doc__ = f"`ConvTranspose` over inputs {_LAYOUTS[ndim]}; same arguments and params."
    return conv_transpose


ConvTranspose1D = _fixed_conv_transpose(1)
ConvTranspose2D = _fixed_conv_transpose(2)
ConvTranspose3D = _fixed_conv_transpose(3)
