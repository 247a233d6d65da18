"""Dropout: rate is the DROP probability, inverted scaling, identity in evaluation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdl
from fdl.nn.core import ShapeError
from fdl.nn.dropout import Dropout

SIZE = 100_000


def binomial_tolerance(probability, size=SIZE, num_std=5):
    """`num_std` standard deviations of a fraction of `size` Bernoulli(probability) draws."""
    return num_std * np.sqrt(probability * (1 - probability) / size)


@pytest.mark.parametrize("key", [None, jax.random.key(0)], ids=["no_key", "key"])
def test_eval_is_identity_whatever_the_key(key):
    x = jnp.linspace(-1, 1, 10)
    y, state = Dropout(0.5).apply({}, {}, x, key=key, train=False)
    np.testing.assert_array_equal(y, x)
    assert state == {}


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_kept_fraction_is_one_minus_rate(rate):
    y, _ = Dropout(rate).apply({}, {}, jnp.ones(SIZE), key=jax.random.key(1), train=True)
    kept_fraction = float(jnp.mean(y != 0))
    assert abs(kept_fraction - (1 - rate)) < binomial_tolerance(1 - rate), f"seed 1, rate {rate}"


@pytest.mark.parametrize("rate", [0.2, 0.75])
def test_kept_values_are_scaled_so_the_mean_is_preserved(rate):
    x = jnp.asarray(np.random.default_rng(2).uniform(1, 2, SIZE), jnp.float32)
    y, _ = Dropout(rate).apply({}, {}, x, key=jax.random.key(3), train=True)
    kept = np.asarray(y != 0)
    np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-6)
    # ratio - 1 = sum x_i (m_i / (1 - rate) - 1) / sum x_i with Bernoulli(1 - rate) masks m_i,
    # whose std is sqrt(rate / ((1 - rate) n)) * sqrt(E[x^2]) / E[x].
    ratio = float(jnp.mean(y) / jnp.mean(x))
    std = np.sqrt(rate / ((1 - rate) * SIZE)) * np.sqrt(np.mean(np.square(x))) / np.mean(x)
    assert abs(ratio - 1) < 5 * std, f"seed 3, rate {rate}"


def test_same_key_same_mask_other_key_other_mask():
    layer, x = Dropout(0.5), jnp.ones(1000)
    first, _ = layer.apply({}, {}, x, key=jax.random.key(4), train=True)
    again, _ = layer.apply({}, {}, x, key=jax.random.key(4), train=True)
    other, _ = layer.apply({}, {}, x, key=jax.random.key(5), train=True)
    np.testing.assert_array_equal(first, again)
    assert np.mean(np.asarray(first) != np.asarray(other)) > 0.3  # ~0.5 expected


def test_batched_examples_get_different_masks_under_jit():
    step = jax.jit(lambda xs, key: fdl.batched(Dropout(0.5))({}, {}, xs, key=key, train=True)[0])
    ys = step(jnp.ones((2, 1000)), jax.random.key(6))
    assert np.mean(np.asarray(ys[0]) != np.asarray(ys[1])) > 0.3


def test_rate_zero_is_identity_in_training():
    x = jnp.linspace(-1, 1, 10)
    y, _ = Dropout(0.0).apply({}, {}, x, key=jax.random.key(7), train=True)
    np.testing.assert_array_equal(y, x)


def test_rate_zero_draws_no_random_bits():
    """A GPT with dropout_rate=0 spent 12% of its step drawing masks that keep everything."""
    def program(rate):
        return str(jax.make_jaxpr(lambda x, key: Dropout(rate).apply({}, {}, x, key=key, train=True)[0])(
            jnp.ones(10), jax.random.key(7)))
    assert "random_bits" in program(0.5)
    assert "random_bits" not in program(0.0)


def test_broadcast_axes_drop_whole_channels():
    layer = Dropout(0.5, broadcast_axes=(0, 1))
    assert layer.init(jax.random.key(0), (8, 8, 64))[0] == (8, 8, 64)
    y, _ = layer.apply({}, {}, jnp.ones((8, 8, 64)), key=jax.random.key(8), train=True)
    per_channel = np.asarray(y).reshape(-1, 64)  # (pixels, channels)
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert np.all(per_channel == per_channel[0])  # each channel all kept or all dropped
    assert 0 < per_channel[0].mean() < 2  # some channels of each kind (seed 8)


def test_train_without_key_raises():
    with pytest.raises(ValueError, match=r"Dropout: train=True needs a key — pass key=\.\.\. to apply "
                                         r"\(fdl\.fit does this for you\)"):
        Dropout(0.5).apply({}, {}, jnp.ones(3), train=True)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.5"])
def test_rate_outside_unit_interval_raises(rate):
    with pytest.raises(ValueError, match=r"Dropout: rate is the drop probability and must be in \[0, 1\)"):
        Dropout(rate)


def test_broadcast_axis_outside_input_raises():
    with pytest.raises(ShapeError, match=r"Dropout: broadcast_axes has axis 2 but the input \(4, 3\) has 2 axes"):
        Dropout(0.5, broadcast_axes=(2,)).init(jax.random.key(0), (4, 3))
