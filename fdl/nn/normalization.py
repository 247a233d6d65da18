"""Normalization layers: BatchNorm, LayerNorm, GroupNorm and RMSNorm (channels-last).

Numerical conventions, shared by BatchNorm, LayerNorm and GroupNorm (PyTorch's
where the frameworks disagree, unless a layer's docstring says otherwise;
RMSNorm has no mean and its own epsilon, see its docstring):

* `epsilon` defaults to 1e-5 (PyTorch; Keras uses 1e-3, Flax 1e-6 for
  LayerNorm/GroupNorm and 1e-5 for BatchNorm) and is added to the variance:
  `y = (x - mean) / sqrt(var + epsilon) * scale + bias`.
* The variance is the biased one, computed as `E[(x - mean)^2]` after the mean
  (two passes). `E[x^2] - E[x]^2` cancels catastrophically in float32 once
  |mean| >> std, e.g. for inputs near 1e4.
* Statistics and the normalization run in at least float32 (bfloat16 inputs
  are upcast) and the output has the input's dtype.
* `scale` starts at ones and `bias` at zeros.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from fdl.nn.core import BATCH_AXIS, Layer, ShapeError

__all__ = ["BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm", "NO_BATCH_AXIS_MESSAGE"]

NO_BATCH_AXIS_MESSAGE = (
    f"BatchNorm: train=True needs the batch axis {BATCH_AXIS!r} — apply the model through "
    f"fdl.batched(model) (or jax.vmap(..., axis_name={BATCH_AXIS!r}))")


def BatchNorm(*, momentum: float = 0.99, epsilon: float = 1e-5, use_scale: bool = True,
              use_bias: bool = True, axis: int = -1, running_variance: str = "biased",
              dtype=jnp.float32) -> Layer:
    """Normalizes each channel with statistics over the batch and all other axes.

    Training (`train=True`) normalizes with the statistics of the current batch:
    the mean and biased variance over the batch axis and every non-channel
    axis of the example (e.g. batch, height and width for images). The batch
    part comes from `lax.pmean(..., "batch")`, so the layer must run under
    `fdl.batched` (a `jax.vmap` with `axis_name="batch"`). It returns the
    updated running statistics as the new state — the same value for every
    example, so `batched` returns one copy:

        running_mean = momentum * running_mean + (1 - momentum) * batch_mean
        running_var  = momentum * running_var  + (1 - momentum) * batch_var
                       # (times n / (n - 1) with running_variance="unbiased")

    Evaluation (`train=False`) normalizes with the running statistics and
    returns the state unchanged.

    Conventions (see the module docstring for epsilon and the variance):
      * `momentum` weights the OLD running value, as in Flax and Keras (both
        default 0.99). PyTorch's `momentum` weights the new batch value:
        PyTorch 0.1 == fdl 0.9.
      * By default (`running_variance="biased"`) the running variance is
        updated with the BIASED batch variance (Flax, Keras). PyTorch updates
        it with the unbiased one, `batch_var * n / (n - 1)` with n = batch
        size x non-channel elements per example, so PyTorch's running_var is
        slightly larger for small batches: `running_variance="unbiased"` does
        the same. The normalization itself uses the biased batch variance in
        training in every case (all three frameworks do), so the flag changes
        only the running variance, i.e. evaluation after training steps.
        To continue training a PyTorch `BatchNorm*d(momentum=m, eps=e)` with
        its weights and buffers and evaluate as PyTorch would: `momentum=1 - m,
        epsilon=e, running_variance="unbiased"`, `mean = running_mean`, `var =
        running_var`, `scale = weight`, `bias = bias`.

    Args:
      momentum: weight of the old running statistics, in [0, 1].
      epsilon: added to the variance, > 0.
      use_scale, use_bias: learn a per-channel scale / bias.
      axis: the channel axis of one example (Keras' `axis`); -1 is channels-last.
      running_variance: "biased" (Flax, Keras; the default) or "unbiased"
        (PyTorch): which batch variance updates the running variance.
      dtype: dtype of params and running statistics.

    Params: `scale: (channels,)`, `bias: (channels,)`.
    State: `mean: (channels,)` running mean, starts at 0; `var: (channels,)`
    running variance (biased or unbiased as `running_variance` says), starts at 1.
    Input `(..., channels)` float (the channel axis at `axis`); output the same shape.

    Raises:
      ValueError: momentum outside [0, 1], epsilon <= 0, a non-int axis or an
        unknown running_variance (constructor); `train=True` outside
        `fdl.batched`, or with "unbiased" one value per channel in the batch (apply).
      ShapeError: `axis` is not an axis of the input (init).
    """
    if not 0 <= momentum <= 1:
        raise ValueError(f"BatchNorm: momentum weights the old running value and must be in "
                         f"[0, 1], got {momentum!r} (PyTorch's momentum=0.1 is fdl's 0.9)")
    check_epsilon("BatchNorm", epsilon)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"BatchNorm: axis is the one channel axis and must be an int, got {axis!r}")
    if running_variance not in ("biased", "unbiased"):
        raise ValueError(f"BatchNorm: running_variance must be 'biased' (Flax, Keras) or 'unbiased' "
                         f"(PyTorch), got {running_variance!r}")

    def init(key, input_shape):
        del key
        channel_axis = normalize_axes("BatchNorm", input_shape, (axis,))[0]
        channels = input_shape[channel_axis]
        state = {"mean": jnp.zeros((channels,), dtype), "var": jnp.ones((channels,), dtype)}
        return tuple(input_shape), affine_params((channels,), use_scale, use_bias, dtype), state

    def apply(params, state, x, *, key=None, train=False):
        del key
        channel_axis = (axis % x.ndim,)
        reduce_axes = tuple(i for i in range(x.ndim) if i not in channel_axis)
        x_compute = x.astype(compute_dtype(x))
        if train:
            mean, var = batch_moments(x_compute, reduce_axes)
            running_var = var
            if running_variance == "unbiased":
                running_var = var * bessel_correction(x.shape, reduce_axes)
            state = {"mean": running_average(state["mean"], mean, momentum),
                     "var": running_average(state["var"], running_var, momentum)}
        else:
            mean, var = state["mean"], state["var"]
        y = standardize(x_compute, along(mean, channel_axis, x.shape),
                        along(var, channel_axis, x.shape), epsilon)
        y = scale_and_shift(y, params, channel_axis, use_scale, use_bias)
        return y.astype(x.dtype), state

    return Layer(init, apply, "BatchNorm")


def LayerNorm(*, epsilon: float = 1e-5, use_scale: bool = True, use_bias: bool = True,
              axis: int | tuple[int, ...] = -1, dtype=jnp.float32) -> Layer:
    """Normalizes each example over `axis` (by default its last axis).

    `epsilon=1e-5` is PyTorch's `nn.LayerNorm` default; Flax's `LayerNorm` uses
    1e-6 and Keras' 1e-3 — pass `epsilon=1e-6` to match a Flax model. The
    variance is the exact biased `E[(x - mean)^2]` (module docstring).

    Args:
      epsilon: added to the variance, > 0.
      use_scale, use_bias: learn an elementwise scale / bias over the normalized axes.
      axis: the axis or axes of one example to normalize over (Keras' `axis`;
        `(-2, -1)` is PyTorch's `normalized_shape` of the last two axes).
      dtype: dtype of params.

    Params: `scale`, `bias` with the input's sizes on `axis`, e.g. `(features,)`.
    Input `(..., features)` float; output the same shape.

    Raises:
      ValueError: epsilon <= 0 (constructor).
      ShapeError: an `axis` that is not an axis of the input (init).
    """
    check_epsilon("LayerNorm", epsilon)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)

    def init(key, input_shape):
        del key
        normalized = normalize_axes("LayerNorm", input_shape, axes)
        param_shape = tuple(input_shape[i] for i in normalized)
        return tuple(input_shape), affine_params(param_shape, use_scale, use_bias, dtype), {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        normalized = tuple(sorted(a % x.ndim for a in axes))
        x_compute = x.astype(compute_dtype(x))
        y = standardize(x_compute, *moments(x_compute, normalized), epsilon)
        y = scale_and_shift(y, params, normalized, use_scale, use_bias)
        return y.astype(x.dtype), state

    return Layer(init, apply, "LayerNorm")


def GroupNorm(num_groups: int, *, epsilon: float = 1e-5, use_scale: bool = True,
              use_bias: bool = True, dtype=jnp.float32) -> Layer:
    """Splits the channels into `num_groups` groups and normalizes each group.

    A group's statistics run over all non-channel axes of the example and the
    channels of that group (Wu & He 2018, arXiv:1803.08494; PyTorch's
    `nn.GroupNorm`): `num_groups=1` normalizes over the whole example, and
    `num_groups=channels` is instance normalization. Channels are grouped
    contiguously: group g holds channels `[g * size, (g + 1) * size)`.
    `epsilon=1e-5` is PyTorch's default (Flax: 1e-6); the variance is the
    exact biased `E[(x - mean)^2]` (module docstring).

    Args:
      num_groups: number of channel groups; must divide the channels.
      epsilon: added to the variance, > 0.
      use_scale, use_bias: learn a per-channel scale / bias.
      dtype: dtype of params.

    Params: `scale: (channels,)`, `bias: (channels,)`.
    Input `(..., channels)` float, e.g. `(height, width, channels)`; output the same shape.

    Raises:
      ValueError: num_groups not a positive int or epsilon <= 0 (constructor).
      ShapeError: no channel axis, or channels not divisible by num_groups (init).
    """
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"GroupNorm: num_groups must be a positive int, got {num_groups!r}")
    check_epsilon("GroupNorm", epsilon)

    def init(key, input_shape):
        del key
        channels = input_shape[normalize_axes("GroupNorm", input_shape, (-1,))[0]]
        if channels % num_groups:
            raise ShapeError("GroupNorm", f"{channels} channels do not split into num_groups="
                             f"{num_groups} equal groups — pick num_groups dividing {channels}")
        return tuple(input_shape), affine_params((channels,), use_scale, use_bias, dtype), {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x_compute = x.astype(compute_dtype(x))
        grouped = x_compute.reshape(*x.shape[:-1], num_groups, x.shape[-1] // num_groups)
        # Statistics over every axis but the group axis (-2): spatial axes and a group's channels.
        reduce_axes = tuple(i for i in range(grouped.ndim) if i != grouped.ndim - 2)
        y = standardize(grouped, *moments(grouped, reduce_axes), epsilon).reshape(x.shape)
        y = scale_and_shift(y, params, (x.ndim - 1,), use_scale, use_bias)
        return y.astype(x.dtype), state

    return Layer(init, apply, "GroupNorm")


def RMSNorm(*, epsilon: float = 1e-6, use_scale: bool = True, axis: int | tuple[int, ...] = -1,
            dtype=jnp.float32) -> Layer:
    """Root-mean-square normalization (Zhang & Sennrich 2019, arXiv:1910.07467).

    `y = x / sqrt(mean(x^2) + epsilon) * scale` over `axis`: no mean is
    subtracted and there is no bias, as in T5, Llama and PyTorch's `nn.RMSNorm`.

    `epsilon=1e-6` is Llama's reference code, Hugging Face's `LlamaRMSNorm`,
    T5 and Flax's `RMSNorm`; some Llama checkpoints use 1e-5 (their config's
    `rms_norm_eps`). PyTorch's `nn.RMSNorm(eps=None)` uses the input dtype's
    machine epsilon instead, `torch.finfo(float32).eps` ~ 1.19e-7: pass
    `epsilon=float(jnp.finfo(jnp.float32).eps)` to match it. `scale` starts at
    ones and multiplies (Gemma's `1 + scale` with zero init is the same
    function after `scale -> scale + 1`). The mean of squares and the
    normalization run in at least float32; the output has the input's dtype.

    Args:
      epsilon: added to the mean of squares, > 0.
      use_scale: learn an elementwise scale over the normalized axes.
      axis: the axis or axes of one example to normalize over.
      dtype: dtype of params.

    Params: `scale` with the input's sizes on `axis`, e.g. `(features,)`.
    Input `(..., features)` float; output the same shape.

    Raises:
      ValueError: epsilon <= 0 (constructor).
      ShapeError: an `axis` that is not an axis of the input (init).

    Example:
      >>> y, _ = RMSNorm().apply({"scale": jnp.ones(2)}, {}, jnp.array([3.0, 4.0]))
      >>> [round(float(v), 4) for v in y]  # [3, 4] / sqrt((9 + 16) / 2 + 1e-6)
      [0.8485, 1.1314]
    """
    if not epsilon > 0:
        raise ValueError(f"RMSNorm: epsilon is added to the mean of squares and must be > 0, got {epsilon!r}")
    axes = (axis,) if isinstance(axis, int) else tuple(axis)

    def init(key, input_shape):
        del key
        normalized = normalize_axes("RMSNorm", input_shape, axes)
        param_shape = tuple(input_shape[i] for i in normalized)
        return tuple(input_shape), affine_params(param_shape, use_scale, False, dtype), {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        normalized = tuple(sorted(a % x.ndim for a in axes))
        x_compute = x.astype(compute_dtype(x))
        mean_square = jnp.mean(jnp.square(x_compute), normalized, keepdims=True)
        y = scale_and_shift(x_compute * lax.rsqrt(mean_square + epsilon), params, normalized,
                            use_scale, False)
        return y.astype(x.dtype), state

    return Layer(init, apply, "RMSNorm")


def check_epsilon(kind: str, epsilon: float) -> None:
    """Raises a ValueError unless `epsilon` > 0."""
    if not epsilon > 0:
        raise ValueError(f"{kind}: epsilon is added to the variance and must be > 0, got {epsilon!r}")


def normalize_axes(kind: str, input_shape, axes: tuple[int, ...]) -> tuple[int, ...]:
    """`axes` as sorted non-negative axes of `input_shape`; a ShapeError if one is out of range."""
    rank = len(input_shape)
    for axis in axes:
        if not -rank <= axis < rank:
            raise ShapeError(kind, f"axis {axis} is not an axis of the input {tuple(input_shape)} "
                             f"— expected input (..., channels) with the axis in [{-rank}, {rank})")
    normalized = tuple(sorted(axis % rank for axis in axes))
    if len(set(normalized)) != len(normalized):
        raise ShapeError(kind, f"axis {axes} names the same axis of the input {tuple(input_shape)} "
                         "twice — list each axis once")
    return normalized


def affine_params(shape: tuple[int, ...], use_scale: bool, use_bias: bool, dtype) -> dict:
    """`{"scale": ones(shape), "bias": zeros(shape)}`, each only when used."""
    params = {}
    if use_scale:
        params["scale"] = jnp.ones(shape, dtype)
    if use_bias:
        params["bias"] = jnp.zeros(shape, dtype)
    return params


def compute_dtype(x):
    """The dtype statistics are computed in: the input's, at least float32."""
    return jnp.promote_types(x.dtype, jnp.float32)


def moments(x, axes: tuple[int, ...]):
    """Mean and exact biased variance `E[(x - mean)^2]` over `axes`, kept as size-1 axes."""
    mean = jnp.mean(x, axes, keepdims=True)
    return mean, jnp.mean(jnp.square(x - mean), axes, keepdims=True)


def batch_moments(x, reduce_axes: tuple[int, ...]):
    """Per-channel mean and exact biased variance over the batch axis and `reduce_axes`.

    Every example has the same number of elements, so the mean over the batch
    of per-example means is the mean over all elements.

    Returns:
      `(mean, var)`, each `(channels,)`, identical on every example.

    Raises:
      ValueError: the batch axis "batch" is not bound (not under `fdl.batched`).
    """
    try:
        mean = lax.pmean(jnp.mean(x, reduce_axes), BATCH_AXIS)
    except NameError:  # jax's "unbound axis name: batch"
        raise ValueError(NO_BATCH_AXIS_MESSAGE) from None
    channel_axes = tuple(i for i in range(x.ndim) if i not in reduce_axes)
    centered = x - along(mean, channel_axes, x.shape)
    return mean, lax.pmean(jnp.mean(jnp.square(centered), reduce_axes), BATCH_AXIS)


def bessel_correction(shape: tuple[int, ...], reduce_axes: tuple[int, ...]) -> float:
    """`n / (n - 1)`, n = the batch size x the example's elements per channel (a Python float).

    Call it under the batch axis (after `batch_moments`). Raises a ValueError when n = 1,
    where the unbiased variance is undefined (PyTorch refuses such a batch too).
    """
    batch_size, per_example = lax.axis_size(BATCH_AXIS), math.prod(shape[i] for i in reduce_axes)
    n = batch_size * per_example
    if n < 2:
        raise ValueError(f"BatchNorm: running_variance='unbiased' needs more than one value per "
                         f"channel, got {n} (batch {batch_size} x {per_example} per example) "
                         "— train with a larger batch, or use running_variance='biased'")
    return n / (n - 1)


def running_average(running, batch_value, momentum: float):
    """`momentum * running + (1 - momentum) * batch_value`, in the running value's dtype."""
    return (momentum * running + (1 - momentum) * batch_value).astype(running.dtype)


def standardize(x, mean, var, epsilon: float):
    """`(x - mean) / sqrt(var + epsilon)`; `mean` and `var` broadcast against `x`."""
    return (x - mean) * lax.rsqrt(var + epsilon)


def along(values, axes: tuple[int, ...], shape: tuple[int, ...]):
    """Reshapes `values` (the sizes of `shape` on sorted `axes`) to broadcast against `shape`."""
    return values.reshape([size if i in axes else 1 for i, size in enumerate(shape)])


def scale_and_shift(y, params: dict, axes: tuple[int, ...], use_scale: bool, use_bias: bool):
    """`y * scale + bias` with params laid along `axes` of `y`."""
    if use_scale:
        y = y * along(params["scale"], axes, y.shape)
    if use_bias:
        y = y + along(params["bias"], axes, y.shape)
    return y
