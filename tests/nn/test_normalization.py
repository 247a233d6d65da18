"""BatchNorm, LayerNorm and GroupNorm against independent float64 numpy references.

Tolerances: the layers compute in float32, whose relative precision is ~1e-7;
normalized outputs are O(1), so atol=rtol=2e-5 leaves room for summation order.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import fdl
from fdl.nn.core import ShapeError
from fdl.nn.normalization import BatchNorm, GroupNorm, LayerNorm

TOL = dict(rtol=2e-5, atol=2e-5)
EPSILON = 1e-5
# Inputs near 1e4 (std 3): float32's spacing there is ~1e-3, so the float32 mean alone
# is off by a few 1e-4 of a std. E[x^2] - E[x]^2 would be off by O(1000) (negative variances).
OFFSET_TOL = dict(rtol=2e-5, atol=2e-3)
OFFSETS = pytest.mark.parametrize("offset,tol", [(0.0, TOL), (1e4, OFFSET_TOL)],
                                  ids=["centered", "offset_1e4"])


def random_inputs(shape, seed, offset=0.0):
    """float32 normal inputs (scaled by 3, shifted by `offset`) and their exact float64 copy."""
    x = (np.random.default_rng(seed).normal(size=shape) * 3 + offset).astype(np.float32)
    return jnp.asarray(x), x.astype(np.float64)


def hand_affine(channels, seed):
    """Non-trivial scale and bias, so a swapped or missing affine step shows."""
    rng = np.random.default_rng(seed)
    return {"scale": jnp.asarray(rng.uniform(0.5, 2.0, channels), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=channels), jnp.float32)}


def numpy_normalize(x, axes, scale, bias, epsilon=EPSILON):
    """Reference: biased moments over `axes` (float64), then the affine step."""
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * np.asarray(scale) + np.asarray(bias)


# ---------------------------------------------------------------- BatchNorm

def batch_norm_setup(momentum=0.9, shape=(4, 3, 3, 2), offset=0.0):
    """A BatchNorm, hand-set params and running statistics, and a batch (float32, float64)."""
    layer = BatchNorm(momentum=momentum)
    state = {"mean": jnp.array([0.5, -1.0], jnp.float32), "var": jnp.array([2.0, 3.0], jnp.float32)}
    xs, xs64 = random_inputs(shape, seed=1, offset=offset)
    return layer, hand_affine(shape[-1], seed=2), state, xs, xs64


@OFFSETS
@pytest.mark.parametrize("shape", [(4, 3, 3, 2), (8, 2)], ids=["images", "vectors"])
def test_batch_norm_train_uses_batch_statistics_over_batch_and_spatial_axes(shape, offset, tol):
    layer, params, state, xs, xs64 = batch_norm_setup(shape=shape, offset=offset)
    ys, _ = fdl.batched(layer)(params, state, xs, train=True)
    expected = numpy_normalize(xs64, tuple(range(len(shape) - 1)), params["scale"], params["bias"])
    np.testing.assert_allclose(ys, expected, **tol)


def test_batch_norm_running_statistics_follow_the_momentum_formula():
    momentum = 0.9  # weight of the OLD value: PyTorch's momentum=0.1
    layer, params, state, xs, xs64 = batch_norm_setup(momentum=momentum)
    _, new_state = fdl.batched(layer)(params, state, xs, train=True)
    batch_mean = xs64.mean(axis=(0, 1, 2))
    batch_var = xs64.var(axis=(0, 1, 2))  # biased (ddof=0), as Flax and Keras; PyTorch uses ddof=1
    np.testing.assert_allclose(new_state["mean"], momentum * np.array([0.5, -1.0]) + (1 - momentum) * batch_mean, **TOL)
    np.testing.assert_allclose(new_state["var"], momentum * np.array([2.0, 3.0]) + (1 - momentum) * batch_var, **TOL)
    assert new_state["mean"].shape == (2,) and new_state["var"].dtype == jnp.float32


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_batch_norm_unbiased_running_variance_by_hand(jit):
    # One channel, batch [1, 3]: mean 2, biased variance 1, unbiased 2 (n / (n - 1) = 2).
    # PyTorch BatchNorm1d(1, momentum=0.1) from running_var 1: 0.9 * 1 + 0.1 * 2 = 1.1;
    # the biased update (fdl's default, Flax, Keras) gives 0.9 * 1 + 0.1 * 1 = 1.0.
    xs, state = jnp.array([[1.0], [3.0]]), {"mean": jnp.zeros(1), "var": jnp.ones(1)}
    params = {"scale": jnp.ones(1), "bias": jnp.zeros(1)}
    results = {}
    for running_variance in ("biased", "unbiased"):
        apply = fdl.batched(BatchNorm(momentum=0.9, running_variance=running_variance))
        apply = jax.jit(apply, static_argnames="train") if jit else apply
        results[running_variance] = apply(params, state, xs, train=True)
    np.testing.assert_allclose(results["biased"][1]["var"], [1.0], rtol=1e-6)
    np.testing.assert_allclose(results["unbiased"][1]["var"], [1.1], rtol=1e-6)
    for ys, new_state in results.values():  # both normalize with the biased variance
        np.testing.assert_allclose(ys[:, 0], [-1 / np.sqrt(1 + EPSILON), 1 / np.sqrt(1 + EPSILON)], rtol=1e-6)
        np.testing.assert_allclose(new_state["mean"], [0.2], rtol=1e-6)


def test_batch_norm_unbiased_running_variance_counts_spatial_elements():
    # PyTorch's convention on images: n = batch x height x width = 4 x 3 x 3 = 36 per channel.
    momentum = 0.9
    layer = BatchNorm(momentum=momentum, running_variance="unbiased")
    _, params, state, xs, xs64 = batch_norm_setup(momentum=momentum)
    ys, new_state = fdl.batched(layer)(params, state, xs, train=True)
    biased_ys, biased_state = fdl.batched(BatchNorm(momentum=momentum))(params, state, xs, train=True)
    n = 4 * 3 * 3
    batch_var = xs64.var(axis=(0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(batch_var, xs64.var(axis=(0, 1, 2), ddof=1))  # the same number
    expected_var = momentum * np.array([2.0, 3.0]) + (1 - momentum) * batch_var
    np.testing.assert_allclose(new_state["var"], expected_var, **TOL)
    np.testing.assert_allclose(new_state["mean"], biased_state["mean"], rtol=0)
    np.testing.assert_allclose(ys, biased_ys, rtol=0)  # training outputs do not depend on the flag


def test_batch_norm_unbiased_running_variance_needs_two_values_per_channel():
    layer = BatchNorm(running_variance="unbiased")
    _, params, state = layer.init(jax.random.key(0), (2,))
    with pytest.raises(ValueError, match=r"^BatchNorm: running_variance='unbiased' needs more than one "
                                         r"value per channel, got 1 \(batch 1 x 1 per example\) — train "
                                         r"with a larger batch, or use running_variance='biased'"):
        fdl.batched(layer)(params, state, jnp.ones((1, 2)), train=True)
    fdl.batched(layer)(params, state, jnp.ones((1, 2)), train=False)  # evaluation needs no batch


def test_batch_norm_eval_uses_running_statistics_and_keeps_state():
    layer, params, state, xs, xs64 = batch_norm_setup()
    ys, new_state = fdl.batched(layer)(params, state, xs, train=False)
    expected = ((xs64 - np.array([0.5, -1.0])) / np.sqrt(np.array([2.0, 3.0]) + EPSILON)
                * np.asarray(params["scale"]) + np.asarray(params["bias"]))
    np.testing.assert_allclose(ys, expected, **TOL)
    jax.tree.map(np.testing.assert_array_equal, new_state, state)
    single, _ = layer.apply(params, state, xs[0])  # eval needs no batch axis
    np.testing.assert_allclose(single, expected[0], **TOL)


def test_batch_norm_init_shapes_and_flags():
    layer = BatchNorm(use_scale=False)
    out_shape, params, state = layer.init(jax.random.key(0), (5, 5, 3))
    assert out_shape == (5, 5, 3) and list(params) == ["bias"]
    np.testing.assert_array_equal(state["mean"], np.zeros(3))
    np.testing.assert_array_equal(state["var"], np.ones(3))


def test_batch_norm_channels_first_axis_matches_channels_last():
    xs, _ = random_inputs((4, 2, 5), seed=3)
    first = BatchNorm(axis=0)
    _, params, state = first.init(jax.random.key(0), (2, 5))
    ys_first, state_first = fdl.batched(first)(params, state, xs, train=True)
    ys_last, state_last = fdl.batched(BatchNorm())(params, state, jnp.swapaxes(xs, 1, 2), train=True)
    np.testing.assert_allclose(ys_first, jnp.swapaxes(ys_last, 1, 2), **TOL)
    np.testing.assert_allclose(state_first["var"], state_last["var"], **TOL)


def test_batch_norm_train_under_jit_matches_eager():
    layer, params, state, xs, _ = batch_norm_setup()
    step = jax.jit(lambda p, s, x: fdl.batched(layer)(p, s, x, train=True))
    eager = fdl.batched(layer)(params, state, xs, train=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), step(params, state, xs), eager)


def test_batch_norm_train_gradients_through_batch_statistics():
    layer, params, state, xs, _ = batch_norm_setup(shape=(3, 2, 2))
    with jax.enable_x64(True):
        params, xs = jax.tree.map(lambda a: a.astype(jnp.float64), (params, xs))

        @jax.jit  # check_grads calls it many times; compile once
        def loss(params, xs):
            ys, _ = fdl.batched(layer)(params, state, xs, train=True)
            return jnp.sum(jnp.sin(ys))

        check_grads(loss, (params, xs), order=1, modes=["rev"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("apply_without_axis", [
    lambda layer, p, s, xs: layer.apply(p, s, xs[0], train=True),
    lambda layer, p, s, xs: jax.vmap(lambda x: layer.apply(p, s, x, train=True), out_axes=(0, None))(xs),
    lambda layer, p, s, xs: jax.jit(lambda x: layer.apply(p, s, x, train=True))(xs[0]),
], ids=["plain", "vmap_without_axis_name", "jit"])
def test_batch_norm_train_without_batch_axis_raises(apply_without_axis):
    layer, params, state, xs, _ = batch_norm_setup()
    with pytest.raises(ValueError, match=r"BatchNorm: train=True needs the batch axis 'batch' — "
                                         r"apply the model through fdl\.batched\(model\)"):
        apply_without_axis(layer, params, state, xs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(momentum=1.5), r"BatchNorm: momentum .* in \[0, 1\], got 1\.5"),
    (dict(epsilon=0.0), r"BatchNorm: epsilon .* must be > 0, got 0\.0"),
    (dict(axis=(0, 1)), r"BatchNorm: axis is the one channel axis and must be an int, got \(0, 1\)"),
    (dict(running_variance="sample"), r"^BatchNorm: running_variance must be 'biased' \(Flax, Keras\) "
                                      r"or 'unbiased' \(PyTorch\), got 'sample'$"),
])
def test_batch_norm_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchNorm(**kwargs)


def test_batch_norm_axis_outside_input_raises():
    with pytest.raises(ShapeError, match=r"BatchNorm: axis 2 is not an axis of the input \(4, 3\)"):
        BatchNorm(axis=2).init(jax.random.key(0), (4, 3))


# ---------------------------------------------------------------- LayerNorm

@OFFSETS
def test_layer_norm_matches_numpy_over_last_axis(offset, tol):
    x, x64 = random_inputs((6, 8), seed=4, offset=offset)
    layer = LayerNorm()
    out_shape, params, _ = layer.init(jax.random.key(0), (6, 8))
    assert out_shape == (6, 8) and params["scale"].shape == (8,)
    params = hand_affine(8, seed=5)
    y, _ = layer.apply(params, {}, x)
    np.testing.assert_allclose(y, numpy_normalize(x64, (-1,), params["scale"], params["bias"]), **tol)


def test_layer_norm_over_two_axes_matches_numpy():
    x, x64 = random_inputs((2, 3, 4), seed=6)
    layer = LayerNorm(axis=(-2, -1))
    _, params, _ = layer.init(jax.random.key(0), (2, 3, 4))
    assert params["scale"].shape == (3, 4)
    params = {"scale": jnp.asarray(np.linspace(0.5, 2, 12).reshape(3, 4), jnp.float32),
              "bias": jnp.asarray(np.linspace(-1, 1, 12).reshape(3, 4), jnp.float32)}
    y, _ = layer.apply(params, {}, x)
    np.testing.assert_allclose(y, numpy_normalize(x64, (1, 2), params["scale"], params["bias"]), **TOL)


def test_layer_norm_default_epsilon_is_pytorchs():
    # x = [0, 0.002]: var = 1e-6, so y = ±0.001 / sqrt(1e-6 + eps); eps=1e-5 gives ±0.30151,
    # Flax's 1e-6 would give ±0.70711.
    y, _ = LayerNorm(use_scale=False, use_bias=False).apply({}, {}, jnp.array([0.0, 0.002]))
    np.testing.assert_allclose(y, [-0.001 / np.sqrt(1.1e-5), 0.001 / np.sqrt(1.1e-5)], rtol=1e-4)


def test_layer_norm_keeps_low_precision_dtype():
    x = jnp.linspace(-2, 2, 8, dtype=jnp.bfloat16)
    y, _ = LayerNorm(use_scale=False, use_bias=False).apply({}, {}, x)
    assert y.dtype == jnp.bfloat16
    expected = numpy_normalize(np.asarray(x, np.float64), (-1,), 1.0, 0.0)
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, atol=2e-2)  # bfloat16 has 8 bits


@pytest.mark.parametrize("axis,match", [
    (1, r"LayerNorm: axis 1 is not an axis of the input \(5,\)"),
    ((1, -1), r"LayerNorm: axis \(1, -1\) names the same axis of the input \(3, 4\) twice"),
])
def test_layer_norm_bad_axis_raises(axis, match):
    shape = (5,) if axis == 1 else (3, 4)
    with pytest.raises(ShapeError, match=match):
        LayerNorm(axis=axis).init(jax.random.key(0), shape)


def test_layer_norm_bad_epsilon_raises():
    with pytest.raises(ValueError, match=r"LayerNorm: epsilon .* must be > 0, got -1"):
        LayerNorm(epsilon=-1)


# ---------------------------------------------------------------- GroupNorm

def numpy_group_norm(x, num_groups, scale, bias, epsilon=EPSILON):
    """Reference for one (height, width, channels) example with contiguous channel groups."""
    height, width, channels = x.shape
    grouped = x.reshape(height, width, num_groups, channels // num_groups)
    mean = grouped.mean(axis=(0, 1, 3), keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=(0, 1, 3), keepdims=True)
    normalized = ((grouped - mean) / np.sqrt(var + epsilon)).reshape(x.shape)
    return normalized * np.asarray(scale) + np.asarray(bias)


@OFFSETS
@pytest.mark.parametrize("num_groups", [1, 3, 6])
def test_group_norm_matches_numpy_on_an_image(num_groups, offset, tol):
    x, x64 = random_inputs((4, 5, 6), seed=7, offset=offset)
    layer = GroupNorm(num_groups)
    out_shape, params, state = layer.init(jax.random.key(0), (4, 5, 6))
    assert out_shape == (4, 5, 6) and params["bias"].shape == (6,) and state == {}
    params = hand_affine(6, seed=8)
    y, _ = layer.apply(params, state, x)
    np.testing.assert_allclose(y, numpy_group_norm(x64, num_groups, params["scale"], params["bias"]), **tol)


def test_group_norm_channels_not_divisible_raises():
    with pytest.raises(ShapeError, match=r"GroupNorm: 6 channels do not split into num_groups=4"):
        GroupNorm(4).init(jax.random.key(0), (3, 3, 6))


@pytest.mark.parametrize("num_groups", [0, 2.0])
def test_group_norm_bad_num_groups_raises(num_groups):
    with pytest.raises(ValueError, match=r"GroupNorm: num_groups must be a positive int"):
        GroupNorm(num_groups)


def test_group_norm_needs_a_channel_axis():
    with pytest.raises(ShapeError, match=r"GroupNorm: axis -1 is not an axis of the input \(\)"):
        GroupNorm(1).init(jax.random.key(0), ())
