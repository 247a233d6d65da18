"""RMSNorm against numpy (kept apart from test_normalization.py, which another change edits)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdl.nn.core import ShapeError
from fdl.nn.normalization import RMSNorm


def numpy_rms_norm(x, scale, epsilon, axes=(-1,)):
    return x / np.sqrt(np.mean(x ** 2, axis=axes, keepdims=True) + epsilon) * scale


@pytest.mark.parametrize("epsilon", [1e-6, 1e-5, float(np.finfo(np.float32).eps)],
                         ids=["llama_t5_flax", "llama2_config", "pytorch_default"])
def test_rms_norm_matches_numpy(epsilon):
    rng = np.random.default_rng(0)
    x, scale = rng.normal(size=(3, 6)), rng.normal(size=(6,))
    layer = RMSNorm() if epsilon == 1e-6 else RMSNorm(epsilon=epsilon)
    out_shape, params, state = layer.init(jax.random.key(0), (3, 6))
    assert out_shape == (3, 6) and state == {} and set(params) == {"scale"}  # no bias
    np.testing.assert_array_equal(params["scale"], np.ones(6))
    y, _ = layer.apply({"scale": jnp.float32(scale)}, {}, jnp.float32(x))
    np.testing.assert_allclose(y, numpy_rms_norm(x, scale, epsilon), rtol=1e-5, atol=1e-6)


def test_rms_norm_does_not_center_and_epsilon_matters_for_small_inputs():
    x = np.full((4,), 1e-3)  # mean square 1e-6 == epsilon: y = 1e-3 / sqrt(2e-6)
    y, _ = RMSNorm(use_scale=False).apply({}, {}, jnp.float32(x))
    np.testing.assert_allclose(y, 1e-3 / np.sqrt(2e-6), rtol=1e-5)


def test_rms_norm_over_two_axes_and_bfloat16():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4))
    layer = RMSNorm(axis=(-2, -1))
    _, params, _ = layer.init(jax.random.key(0), (2, 3, 4))
    assert params["scale"].shape == (3, 4)
    y, _ = layer.apply(params, {}, jnp.float32(x))
    np.testing.assert_allclose(y, numpy_rms_norm(x, 1.0, 1e-6, axes=(-2, -1)), rtol=1e-5, atol=1e-6)
    y16, _ = layer.apply(params, {}, jnp.bfloat16(x))
    assert y16.dtype == jnp.bfloat16  # statistics in float32, output in the input's dtype
    np.testing.assert_allclose(np.float32(y16), y, rtol=2e-2, atol=2e-2)  # bfloat16: 8 mantissa bits


def test_rms_norm_errors():
    with pytest.raises(ValueError, match=r"^RMSNorm: epsilon is added to the mean of squares and must be > 0, got 0$"):
        RMSNorm(epsilon=0)
    with pytest.raises(ShapeError, match=r"^RMSNorm: axis 2 is not an axis of the input \(3,\)"):
        RMSNorm(axis=2).init(jax.random.key(0), (3,))
