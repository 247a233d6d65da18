"""Tests of the per-example augmentations and batch-level mixup."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdl.data import compose, gaussian_noise, mixup, random_crop, random_flip, random_shift

KEYS = jax.random.split(jax.random.key(0), 300)


def _outputs(augment, x, keys=KEYS) -> np.ndarray:
    return np.asarray(jax.jit(jax.vmap(augment, in_axes=(0, None)))(keys, x))


def _distinct_rows(outputs: np.ndarray) -> set:
    return {tuple(row.reshape(-1)) for row in outputs}


def test_shift_zero_fills_and_covers_every_shift():
    x = jnp.arange(1.0, 6.0)
    by_hand = {(0, 0, 1, 2, 3), (0, 1, 2, 3, 4), (1, 2, 3, 4, 5), (2, 3, 4, 5, 0), (3, 4, 5, 0, 0)}
    assert _distinct_rows(_outputs(random_shift(2), x)) == by_hand


def test_shift_moves_only_the_chosen_axis_of_a_signal():
    x = jnp.arange(6.0).reshape(3, 2)  # (length, channels)
    for out in _outputs(random_shift(1, axis=0), x):
        assert any(np.array_equal(out, np.roll(np.pad(x, ((1, 1), (0, 0))), s, 0)[1:4])
                   for s in (-1, 0, 1))


def test_crop_pads_then_crops_like_numpy():
    x = np.arange(1.0, 5.0).reshape(2, 2, 1)  # (h, w, c)
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    by_hand = {tuple(padded[i:i + 2, j:j + 2].reshape(-1)) for i in range(3) for j in range(3)}
    assert _distinct_rows(_outputs(random_crop(1), jnp.asarray(x))) == by_hand


def test_crop_of_a_vector_pads_its_only_axis():
    assert _distinct_rows(_outputs(random_crop(1), jnp.arange(1.0, 4.0))) == {
        (0, 1, 2), (1, 2, 3), (2, 3, 0)}


def test_flip_is_horizontal_with_probability_one_half():
    x = jnp.arange(6.0).reshape(2, 3, 1)
    outputs = _outputs(random_flip(), x, jax.random.split(jax.random.key(1), 2000))
    flipped = np.all(outputs == np.asarray(x)[:, ::-1], axis=(1, 2, 3))
    unchanged = np.all(outputs == np.asarray(x), axis=(1, 2, 3))
    assert np.all(flipped ^ unchanged)
    assert abs(flipped.mean() - 0.5) < 0.05  # binomial sd 0.011: a 4.5 sigma band


def test_noise_has_zero_mean_and_the_given_std():
    noise = np.asarray(gaussian_noise(0.3)(jax.random.key(2), jnp.zeros(20000)))
    assert abs(noise.mean()) < 4 * 0.3 / np.sqrt(20000)
    assert abs(noise.std() - 0.3) < 0.3 * 0.02  # sd of the sample std is ~0.5% here


def test_compose_splits_the_key_per_stage():
    shift, noise = random_shift(2), gaussian_noise(1.0)
    key, x = jax.random.key(3), jnp.arange(5.0)

    @jax.jit
    def composed_and_by_hand(key, x):
        first, second = jax.random.split(key)
        return compose(shift, noise)(key, x), noise(second, shift(first, x))

    np.testing.assert_array_equal(*composed_and_by_hand(key, x))


CATALOGUE = {
    "shift": (random_shift(3), (8, 2)),
    "crop": (random_crop(2), (6, 6, 3)),
    "flip": (random_flip(axis=0), (8, 2)),
    "noise": (gaussian_noise(0.1), (5,)),
    "compose": (compose(random_crop(1), random_flip(), gaussian_noise(0.1)), (4, 4, 1)),
}


@pytest.mark.parametrize("name", CATALOGUE)
def test_catalogue_keys_shapes_jit_and_vmap(name):
    augment, shape = CATALOGUE[name]
    x = jax.random.normal(jax.random.key(4), shape)
    jitted = jax.jit(augment)
    single = [jitted(key, x) for key in KEYS[:2]]
    assert all(out.shape == x.shape and out.dtype == x.dtype for out in single)
    np.testing.assert_array_equal(jitted(KEYS[0], x), single[0])  # same key, same output
    batched = jax.jit(jax.vmap(augment))(KEYS[:8], jnp.stack([x] * 8))
    np.testing.assert_allclose(batched[:2], jnp.stack(single), rtol=1e-6)
    assert any(not np.array_equal(out, batched[0]) for out in batched[1:])  # keys matter


def test_mixup_mixes_inputs_and_targets_with_one_lambda():
    eye = jnp.eye(8)  # row i of the output is then lam * e_i + (1 - lam) * e_p(i)
    mixed = jax.jit(mixup, static_argnames="alpha")(jax.random.key(5), eye, eye, alpha=0.4)
    x_mixed, y_mixed = (np.asarray(a) for a in mixed)
    np.testing.assert_allclose(x_mixed, y_mixed)
    diagonal = np.diag(y_mixed)
    paired = ~np.isclose(diagonal, 1)  # rows with p(i) != i
    lam = diagonal[paired][0]
    assert 0 < lam < 1 and paired.sum() >= 2
    partner = np.where(paired, np.argmax(y_mixed - np.diag(diagonal), axis=1), np.arange(8))
    np.testing.assert_array_equal(np.sort(partner), np.arange(8))  # p is a permutation
    np.testing.assert_allclose(y_mixed, lam * np.eye(8) + (1 - lam) * np.eye(8)[partner],
                               atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: random_shift(-1), r"random_shift: max_shift must be a non-negative int, got -1"),
    (lambda: random_crop(1.5), r"random_crop: padding must be a non-negative int, got 1\.5"),
    (lambda: random_flip(probability=1.5), r"random_flip: probability must be in \[0, 1\]"),
    (lambda: gaussian_noise(-0.1), r"gaussian_noise: std must be >= 0, got -0\.1"),
])
def test_bad_hyperparameters_fail_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_missing_axis_is_reported_at_trace_time():
    with pytest.raises(ValueError, match=r"random_flip: the example has shape \(5,\), with no "
                                         r"axis 1 — augmentations take one example"):
        random_flip()(jax.random.key(0), jnp.zeros(5))


@pytest.mark.parametrize("y, alpha, message", [
    (jnp.eye(4), 0.0, r"mixup: alpha must be > 0, got 0\.0"),
    (jnp.eye(3), 1.0, r"x_batch has shape \(4, 2\), y_batch \(3, 3\)"),
    (jnp.arange(4), 1.0, r"y_batch \(4,\) — pass one-hot targets"),
])
def test_mixup_errors(y, alpha, message):
    with pytest.raises(ValueError, match=message):
        mixup(jax.random.key(0), jnp.zeros((4, 2)), y, alpha)
