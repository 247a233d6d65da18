"""Data augmentation as pure, keyed, per-example JAX functions.

Each constructor checks its hyperparameters and returns `augment(key, x) -> x`
for ONE example (channels-last: (features,), (length, channels) or
(height, width, channels)); the training step vmaps it over the batch with one
key per example, inside the compiled step:

    >>> augment = compose(random_shift(4), gaussian_noise(0.05))
    >>> x_batch = np.zeros((8, 40, 1), np.float32)          # (batch, length, channels)
    >>> keys = jax.random.split(jax.random.key(0), len(x_batch))
    >>> jax.vmap(augment)(keys, x_batch).shape
    (8, 40, 1)

The same key gives the same output. `mixup` is the exception: it mixes
examples with each other, so it takes and returns whole batches.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp

from fdl.typing import PRNGKey

__all__ = ["Augment", "random_shift", "random_crop", "random_flip", "gaussian_noise", "compose",
           "mixup"]

Augment = Callable[[PRNGKey, jax.Array], jax.Array]


def _check_nonnegative_int(where: str, name: str, value) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {name} must be a non-negative int, got {value!r}")


def _check_axis(where: str, axis: int, x: jax.Array) -> int:
    """Returns `axis` as a non-negative index into x's shape, or raises."""
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{where}: the example has shape {x.shape}, with no axis {axis} — "
                         "augmentations take one example, not a batch; pick an existing axis")
    return axis % x.ndim


def _pad_axes(x: jax.Array, axes, padding: int) -> jax.Array:
    widths = [(padding, padding) if axis in axes else (0, 0) for axis in range(x.ndim)]
    return jnp.pad(x, widths)


def random_shift(max_shift: int, axis: int = 0) -> Augment:
    """Shifts an example along one axis by a uniform integer in [-max_shift, max_shift].

    Zero fill, not roll: content shifted past the end is dropped and the vacated
    cells become 0, so the end of a signal never wraps onto its start. A shift s
    gives `out[i] = x[i - s]` (positive s moves content to higher indices).

    Args:
        max_shift: Largest shift in cells.
        axis: The axis to shift, e.g. 0 (time) for a (length, channels) signal.

    Returns:
        `augment(key, x) -> x` of the same shape and dtype.
    """
    _check_nonnegative_int("random_shift", "max_shift", max_shift)

    def augment(key: PRNGKey, x: jax.Array) -> jax.Array:
        axis_index = _check_axis("random_shift", axis, x)
        shift = jax.random.randint(key, (), -max_shift, max_shift + 1)
        padded = _pad_axes(x, (axis_index,), max_shift)
        return jax.lax.dynamic_slice_in_dim(padded, max_shift - shift, x.shape[axis_index],
                                            axis_index)

    return augment


def random_crop(padding: int, axes: tuple[int, ...] | None = None) -> Augment:
    """Zero-pads the spatial axes by `padding` per side, then crops back to size.

    The crop offset is uniform in [0, 2 * padding] per axis, independently
    (torchvision's `RandomCrop(size, padding)`).

    Args:
        padding: Cells of zeros added on each side.
        axes: Axes to crop; default all but the last (channel) axis, or axis 0
            for a 1-D example.

    Returns:
        `augment(key, x) -> x` of the same shape and dtype.
    """
    _check_nonnegative_int("random_crop", "padding", padding)

    def augment(key: PRNGKey, x: jax.Array) -> jax.Array:
        default = tuple(range(max(x.ndim - 1, 1)))
        crop_axes = tuple(_check_axis("random_crop", a, x) for a in (axes or default))
        starts = jax.random.randint(key, (len(crop_axes),), 0, 2 * padding + 1)
        padded = _pad_axes(x, crop_axes, padding)
        for start, axis_index in zip(starts, crop_axes):
            padded = jax.lax.dynamic_slice_in_dim(padded, start, x.shape[axis_index], axis_index)
        return padded

    return augment


def random_flip(axis: int = 1, probability: float = 0.5) -> Augment:
    """Reverses an example along `axis` with the given probability.

    Args:
        axis: Axis to reverse; 1 is the horizontal flip of an (h, w, c) image.
        probability: Chance of a flip, in [0, 1].

    Returns:
        `augment(key, x) -> x` of the same shape and dtype.
    """
    if not 0 <= probability <= 1:
        raise ValueError(f"random_flip: probability must be in [0, 1], got {probability}")

    def augment(key: PRNGKey, x: jax.Array) -> jax.Array:
        axis_index = _check_axis("random_flip", axis, x)
        return jnp.where(jax.random.bernoulli(key, probability), jnp.flip(x, axis_index), x)

    return augment


def gaussian_noise(std: float) -> Augment:
    """Adds independent normal noise of standard deviation `std` to every value.

    Args:
        std: Noise standard deviation, in the units of x (>= 0); may be a traced
            scalar so a sweep can vary it without recompiling.

    Returns:
        `augment(key, x) -> x + std * N(0, 1)` of the same shape and dtype.
    """
    if isinstance(std, (int, float)) and std < 0:
        raise ValueError(f"gaussian_noise: std must be >= 0, got {std}")

    def augment(key: PRNGKey, x: jax.Array) -> jax.Array:
        return x + std * jax.random.normal(key, x.shape, x.dtype)

    return augment


def compose(*augments: Augment) -> Augment:
    """Chains augmentations left to right, each with its own split of the key.

    Args:
        *augments: Per-example augmentations.

    Returns:
        `augment(key, x) -> x` applying them in order.
    """
    def augment(key: PRNGKey, x: jax.Array) -> jax.Array:
        for stage, stage_key in zip(augments, jax.random.split(key, len(augments))):
            x = stage(stage_key, x)
        return x

    return augment


def mixup(key: PRNGKey, x_batch: jax.Array, y_batch: jax.Array,
          alpha: float) -> tuple[jax.Array, jax.Array]:
    """Mixup (Zhang et al., 2018) on a whole batch — NOT a per-example function.

    Draws one lambda ~ Beta(alpha, alpha) for the batch and one permutation p of
    the batch, then returns `lam * x + (1 - lam) * x[p]` and the same mix of the
    targets (the reference implementation's single-lambda form).

    Args:
        key: PRNG key.
        x_batch: (batch, *feature_shape) float features.
        y_batch: (batch, num_classes) one-hot (or soft) float targets.
        alpha: Beta concentration, > 0; small alpha keeps lambda near 0 or 1.

    Returns:
        (mixed x_batch, mixed y_batch), shapes unchanged.

    Raises:
        ValueError: alpha <= 0, y_batch not (batch, ...) one-hot rows, or x and
            y batches of different sizes.
    """
    if isinstance(alpha, (int, float)) and alpha <= 0:
        raise ValueError(f"mixup: alpha must be > 0, got {alpha}")
    if y_batch.ndim < 2 or x_batch.shape[0] != y_batch.shape[0]:
        raise ValueError(f"mixup: x_batch has shape {x_batch.shape}, y_batch {y_batch.shape} — "
                         "pass one-hot targets of shape (batch, num_classes) for the same batch")
    lambda_key, permutation_key = jax.random.split(key)
    lam = jax.random.beta(lambda_key, alpha, alpha)
    permutation = jax.random.permutation(permutation_key, x_batch.shape[0])
    return (lam * x_batch + (1 - lam) * x_batch[permutation],
            lam * y_batch + (1 - lam) * y_batch[permutation])
