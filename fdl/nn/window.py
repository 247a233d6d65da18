"""Sliding-window geometry shared by convolutions and pooling.

A `Window` holds per-axis size, strides, dilation and padding; the helpers
check constructor arguments, resolve "SAME"/"VALID"/explicit padding against
an input shape (see `fdl.nn.conv` for the padding rules) and raise one-line
`ShapeError`s when a window does not fit. `ranked_constructors` makes a
family's public constructors (`Conv`, `Conv1D`, `Conv2D`, `Conv3D`) from one
definition.
"""
from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

from fdl.nn.core import Layer, ShapeError, expect_rank
from fdl.typing import Shape

__all__ = ["LAYOUTS", "Padding", "Window", "is_count", "check_positive", "check_padding",
           "make_window", "window_for", "spatial_layout", "check_rank", "same_padding",
           "explicit_padding", "output_spatial", "check_fits", "layer_constructor",
           "ranked_constructors"]

LAYOUTS = {1: "(length, channels)", 2: "(height, width, channels)", 3: "(depth, height, width, channels)"}

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


def _argument_error(kind: str, detail: str) -> ValueError:
    return ValueError(f"{kind}: {detail}")


def is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_positive(kind: str, name: str, value) -> None:
    """Raises ValueError unless `value` is a positive int or a non-empty sequence of them."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(is_count(v, 1) for v in values):
        raise ValueError(f"{kind}: {name} must be a positive int or a tuple of them, got {value!r}")


def _is_pad_pair(pair) -> bool:
    return isinstance(pair, (tuple, list)) and len(pair) == 2 and all(is_count(v, 0) for v in pair)


def check_padding(kind: str, padding) -> str | int | tuple[tuple[int, int], ...]:
    """`padding` validated: "SAME"/"VALID" (any case), an int >= 0, or (low, high) pairs >= 0."""
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
        return padding.upper()
    if is_count(padding, 0):
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
    return LAYOUTS.get(ndim, "(*spatial, channels)")


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
    elif family and rank - 1 in LAYOUTS:
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


# ---- public constructors of a windowed family ----------------------------------------------

def layer_constructor(build: Callable[..., Layer], kind: str, ndim: int | None,
                      doc: str | None = None) -> Callable[..., Layer]:
    """The constructor `kind(*arguments) = build(kind, ndim, *arguments)`.

    The arguments are spelled once, in `build`'s signature after `(kind, ndim)`:
    the constructor carries that real signature (for `help`, `inspect` and
    editors), checks calls against it, and takes `build`'s docstring unless
    `doc` is given.
    """
    signature = inspect.signature(build)
    public = signature.replace(parameters=list(signature.parameters.values())[2:])

    def constructor(*args, **kwargs) -> Layer:
        try:
            bound = public.bind(*args, **kwargs)
        except TypeError as error:  # name the layer, not the private builder
            raise TypeError(f"{kind}: {error}") from None
        return build(kind, ndim, *bound.args, **bound.kwargs)

    constructor.__signature__ = public
    constructor.__name__ = constructor.__qualname__ = kind
    constructor.__module__ = build.__module__
    constructor.__doc__ = build.__doc__ if doc is None else doc
    return constructor


def ranked_constructors(build: Callable[..., Layer], family: str, fixed_doc: str
                        ) -> tuple[Callable[..., Layer], ...]:
    """`(Family, Family1D, Family2D, Family3D)`: any rank, then 1, 2 and 3 spatial axes.

    Args:
      build: `build(kind, ndim, *arguments) -> Layer`, documented as `Family`;
        ndim is None for `Family` (the rank comes from a tuple argument or the input).
      family: the kind without its dimension, e.g. "Conv".
      fixed_doc: the fixed-rank docstring, formatted with `layout` (e.g.
        "(length, channels)").
    """
    return (layer_constructor(build, family, None),
            *(layer_constructor(build, f"{family}{ndim}D", ndim,
                                fixed_doc.format(layout=LAYOUTS[ndim])) for ndim in (1, 2, 3)))
