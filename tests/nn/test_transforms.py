"""remat and repeat: the same function (value and gradient) as the plain layer and the unrolled serial."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.nn.core import ShapeError

# float32, a few tiny layers deep: reordered sums round at ~1e-6.
TOL = dict(rtol=1e-5, atol=1e-5)
LENGTH, FEATURES, N = 4, 4, 3


def block():
    """A cheap shape-keeping layer with params, randomness and a nonlinearity; the GPT test
    below repeats real Transformer blocks (compiling those takes seconds on a CPU)."""
    return nn.residual(nn.Dense(FEATURES), nn.Gelu(), nn.Dropout(0.2), nn.LayerNorm())


def unstack(tree, n):
    """Copy i's params (or state) of a repeat, as a list."""
    return [jax.tree.map(lambda a: a[i], tree) for i in range(n)]


def as_serial(tree, n, kind="residual"):
    return {f"{kind}_{i}": part for i, part in enumerate(unstack(tree, n))}


def init(layer, input_shape, seed=0):
    """`layer.init` compiled as one program (op-by-op init of a few blocks costs seconds on a CPU)."""
    box = {}

    def params_and_state(key):
        box["shape"], params, state = layer.init(key, input_shape)
        return params, state

    params, state = jax.jit(params_and_state)(jax.random.key(seed))
    return box["shape"], params, state


def example(seed=0, shape=(LENGTH, FEATURES)):
    return jnp.float32(np.random.default_rng(seed).normal(size=shape))


def test_repeat_init_gives_serial_params_stacked():
    out_shape, params, state = init(nn.repeat(block(), N), (LENGTH, FEATURES))
    _, serial_params, _ = init(nn.serial(*[block()] * N), (LENGTH, FEATURES))
    assert out_shape == (LENGTH, FEATURES)
    assert params["dense_0"]["w"].shape == (N, FEATURES, FEATURES)
    jax.tree.map(np.testing.assert_array_equal, as_serial(params, N), serial_params)
    assert jax.tree_util.tree_leaves(state) == []


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train_with_dropout"])
def test_repeat_equals_unrolled_serial_value_and_gradient(train):
    repeated, unrolled = nn.repeat(block(), N), nn.serial(*[block()] * N)
    _, params, state = init(repeated, (LENGTH, FEATURES))
    x, key = example(), jax.random.key(1)

    def loss(apply, params, state, x):
        y, _ = apply(params, state, x, key=key, train=train)
        return jnp.sum(jnp.sin(y))

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 3)), static_argnums=0)
    value, (grads, x_grad) = value_and_grad(repeated.apply, params, state, x)
    serial_value, (serial_grads, serial_x_grad) = value_and_grad(
        unrolled.apply, as_serial(params, N), as_serial(state, N), x)
    np.testing.assert_allclose(value, serial_value, **TOL)
    np.testing.assert_allclose(x_grad, serial_x_grad, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), as_serial(grads, N), serial_grads)


def test_repeat_stacks_model_state_under_batched():
    layer = nn.residual(nn.Dense(3), nn.BatchNorm(momentum=0.5))
    repeated, unrolled = nn.repeat(layer, N), nn.serial(*[layer] * N)
    _, params, state = init(repeated, (3,))
    assert state["batch_norm_1"]["mean"].shape == (N, 3)
    xs = example(shape=(5, 3))
    ys, new_state = jax.jit(lambda p, s, x: fdl.batched(repeated)(p, s, x, train=True))(params, state, xs)
    serial_ys, serial_state = jax.jit(fdl.batched(unrolled), static_argnames="train")(
        as_serial(params, N), as_serial(state, N), xs, train=True)
    np.testing.assert_allclose(ys, serial_ys, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), as_serial(new_state, N), serial_state)
    assert not np.allclose(new_state["batch_norm_1"]["mean"], state["batch_norm_1"]["mean"])


def test_repeat_program_holds_one_copy():
    """Compile cost does not grow with n: the traced program has as many ops for 2 copies as for 6."""
    def op_count(n):
        layer = nn.repeat(nn.residual(nn.Dense(4), nn.Tanh()), n)
        _, params, state = layer.init(jax.random.key(0), (4,))
        jaxpr = jax.make_jaxpr(lambda p, x: layer.apply(p, state, x)[0])(params, jnp.ones(4))
        return str(jaxpr).count("dot_general")

    assert op_count(2) == op_count(6) == 1


def test_repeat_takes_a_pair_and_names_errors():
    layer = nn.repeat(nn.TransformerDecoderBlock(2, 8), 2)
    valid = jnp.array([True, True, True, False])
    out_shape, params, state = init(layer, ((LENGTH, FEATURES), (LENGTH,)))
    assert out_shape == ((LENGTH, FEATURES), (LENGTH,))
    (y, valid_out), _ = jax.jit(layer.apply)(params, state, (example(), valid))
    np.testing.assert_array_equal(valid_out, valid)
    with pytest.raises(ShapeError, match=r"^Repeat: the layer maps \(4,\) to \(3,\), but repeat feeds "
                                         r"each copy's output to the next"):
        nn.repeat(nn.Dense(3), 2).init(jax.random.key(0), (4,))
    with pytest.raises(ShapeError, match=r"^repeat\.TransformerDecoderBlock\.serial\[0\]\.residual\.serial\[1\] "
                                         r"MultiHeadSelfAttention: features 4 is not divisible"):
        nn.repeat(nn.TransformerDecoderBlock(3, 8), 2).init(jax.random.key(0), (LENGTH, FEATURES))
    with pytest.raises(ValueError, match=r"^repeat: n must be a positive int, got 0$"):
        nn.repeat(nn.Dense(3), 0)
    with pytest.raises(TypeError, match=r"^repeat: expected a Layer, got function"):
        nn.repeat(nn.Relu, 2)


def test_repeat_summary_counts_every_copy():
    model = nn.serial(nn.repeat(nn.residual(nn.Dense(4)), 5), nn.Dense(2))
    text = fdl.summary(model, (4,))
    assert "repeat_0" in text and "Repeat" in text and "100" in text  # 5 x (16 + 4)
    assert "total params 110" in text


@pytest.mark.parametrize("policy", [None, "nothing_saveable", "dots_saveable",
                                    jax.checkpoint_policies.everything_saveable],
                         ids=["default", "nothing", "dots", "callable"])
def test_remat_equals_the_plain_layer(policy):
    plain = block()
    layer = nn.remat(plain, policy)
    _, params, state = init(plain, (LENGTH, FEATURES))
    xs, key = example(shape=(2, LENGTH, FEATURES)), jax.random.key(2)

    def loss(apply, params):
        y, _ = fdl.batched(apply)(params, state, xs, key=key, train=True)
        return jnp.sum(jnp.sin(y))

    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(layer, p)))(params)
    plain_value, plain_grads = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
    np.testing.assert_allclose(value, plain_value, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), grads, plain_grads)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(layer, p)))(params)
    assert "remat" in str(jaxpr) or "checkpoint" in str(jaxpr)


def test_remat_keeps_params_names_and_errors():
    model = nn.serial(nn.remat(nn.Dense(3)), nn.remat(nn.named("head", nn.Dense(2))))
    _, params, _ = model.init(jax.random.key(0), (4,))
    assert set(params) == {"dense_0", "head"}
    stacked = nn.repeat(nn.remat(nn.residual(nn.Dense(4)), "dots_saveable", prevent_cse=False), 3)
    _, params, state = init(stacked, (4,))
    assert stacked.apply(params, state, jnp.ones(4))[0].shape == (4,)
    with pytest.raises(ValueError, match=r"^remat: unknown policy 'dots_savable' — did you mean "
                                         r"'dots_saveable'\?"):
        nn.remat(nn.Dense(3), "dots_savable")


def test_gpt_blocks_scan_or_unroll_to_the_same_function():
    kwargs = dict(vocab_size=11, context=6, width=8, depth=2, heads=2, dropout_rate=0.1)
    scanned = nn.models.gpt(**kwargs, remat=True)
    unrolled = nn.models.gpt(**kwargs, scan_layers=False)
    _, params, state = init(scanned, (6,))
    _, serial_params, serial_state = init(unrolled, (6,))
    assert params["blocks"]["residual_1"]["dense_1"]["w"].shape == (2, 8, 32)
    restacked = dict(params, blocks=as_serial(params["blocks"], 2, "transformer_decoder_block"))
    jax.tree.map(np.testing.assert_array_equal, restacked, serial_params)
    tokens, key = jnp.array([1, 4, 0, 10, 3, 3], jnp.int32), jax.random.key(3)

    def loss(model, params, state):
        logits, _ = model.apply(params, state, tokens, key=key, train=True)
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(scanned, p, state)))(params)
    serial_value, serial_grads = jax.jit(jax.value_and_grad(lambda p: loss(unrolled, p, serial_state)))(
        serial_params)
    np.testing.assert_allclose(value, serial_value, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL),
                 dict(grads, blocks=as_serial(grads["blocks"], 2, "transformer_decoder_block")), serial_grads)
