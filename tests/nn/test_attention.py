"""MultiHeadSelfAttention and TransformerEncoderBlock against numpy references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdl
from fdl.nn.attention import (
    MultiHeadSelfAttention, TransformerDecoderBlock, TransformerEncoderBlock, allowed_pairs,
    attention_weights, fused_attention,
)
from fdl.nn.combinators import serial
from fdl.nn.core import ShapeError

# float32 layer vs float64 numpy on O(1) values with a handful of sums: rounding stays ~1e-6.
TOL = dict(rtol=1e-5, atol=1e-5)
LENGTH, FEATURES = 5, 4
VALID = np.array([True, True, False, True, False])  # padding in the middle and at the end


def numpy_rope(x, base=10000.0):
    """GPT-NeoX rotate-half RoPE on `(length, dim)`, written with complex numbers:
    feature i and i + dim/2 are the real and imaginary parts of one number turned by t * theta_i."""
    length, dim = x.shape
    half = dim // 2
    theta = base ** (-2.0 * np.arange(half) / dim)
    z = (x[:, :half] + 1j * x[:, half:]) * np.exp(1j * np.arange(length)[:, None] * theta)
    return np.concatenate([z.real, z.imag], axis=1)


def numpy_attention(p, x, causal=False, valid=None, mask=None, rotary=False):
    """Per-head loops; padded query rows output 0, queries with no allowed key only the out bias."""
    num_heads = p["query"]["w"].shape[1]
    length = len(x)
    allowed = np.array([[(not causal or j <= i) and (valid is None or valid[j])
                         and (mask is None or mask[i, j])
                         for j in range(length)] for i in range(length)])
    y = np.zeros((length, p["out"]["w"].shape[-1]))
    for h in range(num_heads):
        q, k, v = (x @ p[name]["w"][:, h] + p[name]["b"][h] for name in ("query", "key", "value"))
        if rotary:
            q, k = numpy_rope(q), numpy_rope(k)
        scores = q @ k.T / math.sqrt(q.shape[-1])
        weights = np.zeros_like(scores)
        for i in range(length):
            if allowed[i].any():
                e = np.exp(scores[i][allowed[i]] - scores[i][allowed[i]].max())
                weights[i, allowed[i]] = e / e.sum()
        y += weights @ v @ p["out"]["w"][h]
    y += p["out"]["b"]
    return y if valid is None else np.where(valid[:, None], y, 0)


def random_params(layer, input_shape, seed=0):
    """Init's structure with every leaf (biases too) replaced by normal draws, float64."""
    _, params, _ = layer.init(jax.random.key(seed), input_shape)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: 0.5 * rng.normal(size=a.shape), params)


def to32(tree):
    return jax.tree.map(jnp.float32, tree)


def example(seed=1, shape=(LENGTH, FEATURES)):
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("valid", [None, VALID], ids=["no_padding", "padding"])
def test_attention_matches_numpy(causal, valid):
    layer = MultiHeadSelfAttention(2, causal=causal)
    params, x = random_params(layer, (LENGTH, FEATURES)), example()
    inputs = jnp.float32(x) if valid is None else (jnp.float32(x), jnp.asarray(valid))
    y, state = layer.apply(to32(params), {}, inputs)
    assert state == {}
    np.testing.assert_allclose(y, numpy_attention(params, x, causal, valid), **TOL)


# An explicit [query, key] mask: row 2 allows no key at all, row 0 only key 3.
MASK = np.array([[False, False, False, True, False],
                 [True, True, False, False, True],
                 [False, False, False, False, False],
                 [True, False, True, True, True],
                 [True, True, True, True, True]])


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_explicit_mask_matches_numpy(causal):
    layer = MultiHeadSelfAttention(2, causal=causal)
    out_shape, _, _ = layer.init(jax.random.key(0), ((LENGTH, FEATURES), (LENGTH, LENGTH)))
    assert out_shape == (LENGTH, FEATURES)
    params, x = random_params(layer, (LENGTH, FEATURES)), example()
    y, _ = layer.apply(to32(params), {}, (jnp.float32(x), jnp.asarray(MASK)))
    np.testing.assert_allclose(y, numpy_attention(params, x, causal, mask=MASK), **TOL)
    np.testing.assert_allclose(y[2], params["out"]["b"], **TOL)  # no allowed key: the out bias


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("valid", [None, VALID], ids=["no_padding", "padding"])
def test_rotary_attention_matches_numpy(causal, valid):
    layer = MultiHeadSelfAttention(2, head_dim=4, causal=causal, rotary=True)
    params, x = random_params(layer, (LENGTH, FEATURES)), example()
    inputs = jnp.float32(x) if valid is None else (jnp.float32(x), jnp.asarray(valid))
    y, _ = layer.apply(to32(params), {}, inputs)
    np.testing.assert_allclose(y, numpy_attention(params, x, causal, valid, rotary=True), **TOL)
    plain, _ = MultiHeadSelfAttention(2, head_dim=4, causal=causal).apply(to32(params), {}, inputs)
    assert not np.allclose(y, plain)  # the rotation is applied


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("given", ["none", "valid", "mask", "valid_all_padding"])
def test_fused_attention_equals_explicit_weights(causal, given):
    rng = np.random.default_rng(7)
    q, k, v = (jnp.float32(rng.normal(size=(LENGTH, 2, 3))) for _ in range(3))
    valid = {"valid": jnp.asarray(VALID), "valid_all_padding": jnp.zeros(LENGTH, bool)}.get(given)
    mask = jnp.asarray(MASK) if given == "mask" else None
    fused = fused_attention(q, k, v, causal=causal, valid=valid, mask=mask)
    weights = attention_weights(q, k, allowed_pairs(LENGTH, causal, valid, mask))
    np.testing.assert_allclose(fused, jnp.einsum("hqk,khd->qhd", weights, v), **TOL)
    assert np.isfinite(fused).all()


def test_attention_runs_through_dot_product_attention(monkeypatch):
    calls = []
    original = jax.nn.dot_product_attention

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
    layer = MultiHeadSelfAttention(2, causal=True, dropout_rate=0.5)
    _, params, _ = layer.init(jax.random.key(0), (LENGTH, FEATURES))
    x = jnp.float32(example())
    y32, _ = layer.apply(params, {}, x, key=jax.random.key(1))
    assert len(calls) == 1 and calls[0]["is_causal"] and calls[0]["mask"] is None
    # Dropped weights in training and float64 take the explicit path (the same numbers).
    layer.apply(params, {}, x, key=jax.random.key(1), train=True)
    with jax.enable_x64(True):
        y64, _ = layer.apply(jax.tree.map(jnp.float64, params), {}, jnp.float64(x))
    assert len(calls) == 1
    np.testing.assert_allclose(y32, y64, **TOL)


def test_head_dim_and_out_features():
    layer = MultiHeadSelfAttention(2, head_dim=3, out_features=6)
    out_shape, params, _ = layer.init(jax.random.key(0), (LENGTH, 5))
    assert out_shape == (LENGTH, 6)
    assert params["query"]["w"].shape == (5, 2, 3) and params["out"]["w"].shape == (2, 3, 6)
    params, x = random_params(layer, (LENGTH, 5)), example(shape=(LENGTH, 5))
    y, _ = layer.apply(to32(params), {}, jnp.float32(x))
    np.testing.assert_allclose(y, numpy_attention(params, x), **TOL)


def test_causal_output_ignores_later_tokens():
    layer = MultiHeadSelfAttention(2, causal=True)
    _, params, _ = layer.init(jax.random.key(0), (LENGTH, FEATURES))
    x = jnp.float32(example())
    y, _ = layer.apply(params, {}, x)
    for t in range(LENGTH - 1):
        perturbed, _ = layer.apply(params, {}, x.at[t + 1:].add(10.0))
        np.testing.assert_array_equal(perturbed[:t + 1], y[:t + 1])
        assert not np.allclose(perturbed[t + 1:], y[t + 1:])


def test_padded_tokens_change_nothing_and_output_zero():
    layer = MultiHeadSelfAttention(2)
    _, params, _ = layer.init(jax.random.key(0), ((LENGTH, FEATURES), (LENGTH,)))
    x, valid = jnp.float32(example()), jnp.asarray(VALID)
    y, _ = layer.apply(params, {}, (x, valid))
    perturbed, _ = layer.apply(params, {}, (jnp.where(valid[:, None], x, 100.0), valid))
    np.testing.assert_array_equal(perturbed, y)
    np.testing.assert_array_equal(y[~VALID], 0.0)
    # Under fdl.batched the pair is split per example like any pytree input.
    xs, valids = jnp.stack([x, -x]), jnp.stack([valid, ~valid])
    ys, _ = fdl.batched(layer)(params, {}, (xs, valids))
    np.testing.assert_allclose(ys[0], y, **TOL)
    np.testing.assert_allclose(ys[1], layer.apply(params, {}, (-x, ~valid))[0], **TOL)


def test_fully_masked_rows_give_zeros_not_nan():
    layer = MultiHeadSelfAttention(2, causal=True)
    _, params, _ = layer.init(jax.random.key(0), (LENGTH, FEATURES))
    x, valid = jnp.float32(example()), jnp.zeros(LENGTH, bool)

    def loss(params, x):
        return jnp.sum(layer.apply(params, {}, (x, valid))[0])

    y, _ = layer.apply(params, {}, (x, valid))
    np.testing.assert_array_equal(y, 0.0)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)  # one compile, not one per op
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(grads))
    # A row whose only allowed key is padded (causal, first token padding) gets zero weights.
    ones = jnp.ones((3, 1, 2))
    weights = attention_weights(ones, ones, jnp.array([[False] * 3] + [[True] * 3] * 2))
    np.testing.assert_array_equal(weights[0, 0], 0.0)
    np.testing.assert_allclose(weights[0, 1:], 1 / 3, rtol=1e-6)


def test_softmax_runs_in_float32_for_bfloat16():
    q = jnp.ones((3, 1, 2), jnp.bfloat16)
    weights = attention_weights(q, q, jnp.ones((3, 3), bool))
    assert weights.dtype == jnp.float32


def test_attention_dropout_only_in_training():
    layer = MultiHeadSelfAttention(2, dropout_rate=0.5)
    _, params, _ = layer.init(jax.random.key(0), (LENGTH, FEATURES))
    x = jnp.float32(example())
    evaluation, _ = layer.apply(params, {}, x, key=jax.random.key(1))
    without_dropout, _ = MultiHeadSelfAttention(2).apply(params, {}, x)
    training, _ = layer.apply(params, {}, x, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(evaluation, without_dropout)
    assert not np.allclose(training, evaluation)
    with pytest.raises(ValueError, match=r"train=True needs a key"):
        layer.apply(params, {}, x, train=True)


@pytest.mark.parametrize("make_layer,input_shape,match", [
    (lambda: MultiHeadSelfAttention(3), (LENGTH, FEATURES),
     r"^MultiHeadSelfAttention: features 4 is not divisible by num_heads 3 — pick num_heads "
     r"dividing 4 or set head_dim$"),
    (lambda: MultiHeadSelfAttention(2), (FEATURES,),
     r"^MultiHeadSelfAttention: expected input \(length, features\), got \(4,\) — add a feature axis"),
    (lambda: MultiHeadSelfAttention(2), ((LENGTH, FEATURES), (LENGTH, 1)),
     r"^MultiHeadSelfAttention: the second input must be valid \(5,\), one bool per token of x "
     r"\(5, 4\), or mask \(5, 5\), \[query, key\]; got \(5, 1\)$"),
    (lambda: MultiHeadSelfAttention(2), ((LENGTH, FEATURES), (LENGTH,), (LENGTH,)),
     r"^MultiHeadSelfAttention: expected the shapes of \(x, valid\)"),
    (lambda: TransformerEncoderBlock(3, 8), (LENGTH, FEATURES),
     r"^TransformerEncoderBlock\.serial\[0\]\.residual\.serial\[1\] MultiHeadSelfAttention: "
     r"features 4 is not divisible by num_heads 3"),
    (lambda: TransformerEncoderBlock(2, 8), (LENGTH, FEATURES, 1),
     r"^TransformerEncoderBlock: expected input \(length, features\), got \(5, 4, 1\)"),
    (lambda: MultiHeadSelfAttention(2, head_dim=3, rotary=True), (LENGTH, FEATURES),
     r"^MultiHeadSelfAttention: rotary needs an even head_dim, got 3 — set head_dim to an even number"),
    (lambda: TransformerDecoderBlock(4, 8, rotary=True), (LENGTH, FEATURES),
     r"^TransformerDecoderBlock\.serial\[0\]\.residual\.serial\[1\] MultiHeadSelfAttention: "
     r"rotary needs an even head_dim, got 1"),
    (lambda: TransformerDecoderBlock(2, 8), ((LENGTH, FEATURES), (LENGTH, 3)),
     r"^TransformerDecoderBlock: the second input must be valid \(5,\)"),
])
def test_bad_input_shapes(make_layer, input_shape, match):
    with pytest.raises(ShapeError, match=match):
        make_layer().init(jax.random.key(0), input_shape)


@pytest.mark.parametrize("make_layer,match", [
    (lambda: MultiHeadSelfAttention(0), r"^MultiHeadSelfAttention: num_heads must be a positive int, got 0$"),
    (lambda: MultiHeadSelfAttention(2, head_dim=0), r"head_dim must be a positive int, got 0$"),
    (lambda: MultiHeadSelfAttention(2, out_features=2.5), r"out_features must be a positive int, got 2.5$"),
    (lambda: MultiHeadSelfAttention(2, dropout_rate=1.0),
     r"^MultiHeadSelfAttention: dropout_rate is the drop probability and must be in \[0, 1\), got 1.0$"),
    (lambda: MultiHeadSelfAttention(2, w_init="lecun"),
     r"^MultiHeadSelfAttention w_init: unknown initializer"),
    (lambda: TransformerEncoderBlock(2, 0),
     r"^TransformerEncoderBlock: mlp_dim must be a positive int, got 0$"),
    (lambda: TransformerEncoderBlock(2, 8, activation="gleu"),
     r"unknown activation 'gleu' — did you mean 'gelu'"),
    (lambda: MultiHeadSelfAttention(2, rotary=True, rotary_base=0),
     r"^MultiHeadSelfAttention: rotary_base must be > 0, got 0$"),
    (lambda: MultiHeadSelfAttention(2, implementation="flash"),
     r"^MultiHeadSelfAttention: implementation must be None, 'xla' or 'cudnn'"),
    (lambda: TransformerDecoderBlock(2, 8, norm="batch"),
     r"^TransformerDecoderBlock: norm must be 'layer' \(LayerNorm\) or 'rms' \(RMSNorm\), got 'batch'$"),
    (lambda: TransformerDecoderBlock(2, -1), r"^TransformerDecoderBlock: mlp_dim must be a positive int"),
])
def test_bad_constructor_arguments(make_layer, match):
    with pytest.raises(ValueError, match=match):
        make_layer()


def test_valid_must_be_bool():
    layer = MultiHeadSelfAttention(2)
    _, params, _ = layer.init(jax.random.key(0), (LENGTH, FEATURES))
    match = r"^MultiHeadSelfAttention: valid must be a bool array \(True = real token\), got dtype int32"
    with pytest.raises(TypeError, match=match):
        layer.apply(params, {}, (jnp.zeros((LENGTH, FEATURES)), jnp.ones(LENGTH, jnp.int32)))
    match = r"^MultiHeadSelfAttention: mask must be a bool array \(True = may attend\), got dtype float32"
    with pytest.raises(TypeError, match=match):
        layer.apply(params, {}, (jnp.zeros((LENGTH, FEATURES)), jnp.ones((LENGTH, LENGTH))))


def numpy_layer_norm(p, x, epsilon=1e-5):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * p["scale"] + p["bias"]


def numpy_mlp(p, x):
    gelu = np.vectorize(lambda z: 0.5 * z * (1 + math.erf(z / math.sqrt(2))))
    hidden = gelu(x @ p["dense_1"]["w"] + p["dense_1"]["b"])
    return hidden @ p["dense_4"]["w"] + p["dense_4"]["b"]


def numpy_block(params, x, valid, norm_first):
    if norm_first:
        attention, mlp = params["residual_0"], params["residual_1"]
        x = x + numpy_attention(attention["multi_head_self_attention_1"],
                                numpy_layer_norm(attention["layer_norm_0"], x), valid=valid)
        return x + numpy_mlp(mlp, numpy_layer_norm(mlp["layer_norm_0"], x))
    x = x + numpy_attention(params["residual_0"]["multi_head_self_attention_0"], x, valid=valid)
    x = numpy_layer_norm(params["layer_norm_1"], x)
    mlp = {"dense_1": params["residual_2"]["dense_0"], "dense_4": params["residual_2"]["dense_3"]}
    return numpy_layer_norm(params["layer_norm_3"], x + numpy_mlp(mlp, x))


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_norm", "post_norm"])
def test_block_matches_numpy_composition_in_eval(norm_first):
    block = TransformerEncoderBlock(2, 6, norm_first=norm_first)
    input_shape = ((LENGTH, FEATURES), (LENGTH,))
    out_shape, _, state = block.init(jax.random.key(0), input_shape)
    params, x = random_params(block, input_shape), example()
    (y, valid), new_state = block.apply(to32(params), state, (jnp.float32(x), jnp.asarray(VALID)),
                                        key=jax.random.key(1))
    assert out_shape == ((LENGTH, FEATURES), (LENGTH,)) and new_state == state
    np.testing.assert_array_equal(valid, VALID)
    expected = numpy_block(params, x, VALID, norm_first)
    np.testing.assert_allclose(y[VALID], expected[VALID], **TOL)


def test_block_param_names_and_shapes():
    out_shape, params, state = TransformerEncoderBlock(2, 6).init(jax.random.key(0), (LENGTH, FEATURES))
    assert out_shape == (LENGTH, FEATURES) and jax.tree_util.tree_leaves(state) == []
    assert params["residual_0"]["multi_head_self_attention_1"]["query"]["w"].shape == (FEATURES, 2, 2)
    assert params["residual_1"]["dense_1"]["w"].shape == (FEATURES, 6)
    assert params["residual_1"]["dense_4"]["w"].shape == (6, FEATURES)


def test_stacked_blocks_ignore_padding_and_dropout_needs_training():
    model = serial(TransformerEncoderBlock(2, 6, causal=True), TransformerEncoderBlock(2, 6))
    _, params, state = model.init(jax.random.key(0), ((LENGTH, FEATURES), (LENGTH,)))
    x, valid = jnp.float32(example()), jnp.asarray(VALID)

    def run(x, train=False, seed=1):
        (y, _), _ = model.apply(params, state, (x, valid), key=jax.random.key(seed), train=train)
        return y

    y = run(x)
    np.testing.assert_array_equal(run(jnp.where(valid[:, None], x, -50.0))[VALID], y[VALID])
    assert run(x, train=True).shape == (LENGTH, FEATURES)
    assert not np.allclose(run(x, train=True), y)
    np.testing.assert_array_equal(run(x, train=True), run(x, train=True))


def numpy_rms_norm(p, x, epsilon=1e-5):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + epsilon) * p["scale"]


def test_decoder_block_matches_numpy_rms_rotary():
    """Llama-style: pre-RMSNorm, causal rotary attention, then the MLP, each with a residual."""
    block = TransformerDecoderBlock(2, 6, norm="rms", rotary=True)
    _, _, state = block.init(jax.random.key(0), (LENGTH, FEATURES))
    params, x = random_params(block, (LENGTH, FEATURES)), example()
    y, _ = block.apply(to32(params), state, jnp.float32(x), key=jax.random.key(1))
    attention, mlp = params["residual_0"], params["residual_1"]
    expected = x + numpy_attention(attention["multi_head_self_attention_1"],
                                   numpy_rms_norm(attention["rmsnorm_0"], x), causal=True, rotary=True)
    expected = expected + numpy_mlp(mlp, numpy_rms_norm(mlp["rmsnorm_0"], expected))
    np.testing.assert_allclose(y, expected, **TOL)


def test_decoder_block_is_the_causal_pre_norm_encoder_block():
    decoder = TransformerDecoderBlock(2, 6, dropout_rate=0.2)
    encoder = TransformerEncoderBlock(2, 6, dropout_rate=0.2, causal=True, norm_first=True)
    _, params, state = decoder.init(jax.random.key(0), (LENGTH, FEATURES))
    _, encoder_params, _ = encoder.init(jax.random.key(0), (LENGTH, FEATURES))
    assert jax.tree.structure(params) == jax.tree.structure(encoder_params)
    x = jnp.float32(example())
    for train in (False, True):
        y, _ = decoder.apply(params, state, x, key=jax.random.key(3), train=train)
        expected, _ = encoder.apply(params, state, x, key=jax.random.key(3), train=train)
        np.testing.assert_array_equal(y, expected)
    perturbed, _ = decoder.apply(params, state, x.at[3:].add(5.0))
    np.testing.assert_allclose(perturbed[:3], decoder.apply(params, state, x)[0][:3], **TOL)


def test_blocks_pass_an_explicit_mask_along():
    model = serial(TransformerDecoderBlock(2, 6), TransformerEncoderBlock(2, 6))
    out_shape, params, state = model.init(jax.random.key(0), ((LENGTH, FEATURES), (LENGTH, LENGTH)))
    assert out_shape == ((LENGTH, FEATURES), (LENGTH, LENGTH))
    x, mask = jnp.float32(example()), jnp.asarray(MASK | np.eye(LENGTH, dtype=bool))
    (y, mask_out), _ = model.apply(params, state, (x, mask))
    np.testing.assert_array_equal(mask_out, mask)
    assert y.shape == (LENGTH, FEATURES) and np.isfinite(y).all()
    # The decoder combines the mask with causality: token 0 may attend only to itself.
    decoder = TransformerDecoderBlock(2, 6)
    _, params, state = decoder.init(jax.random.key(0), ((LENGTH, FEATURES), (LENGTH, LENGTH)))
    (z, _), _ = decoder.apply(params, state, (x, mask))
    (z_perturbed, _), _ = decoder.apply(params, state, (x.at[1:].add(7.0), mask))
    np.testing.assert_allclose(z_perturbed[0], z[0], **TOL)
    (z_open, _), _ = TransformerEncoderBlock(2, 6).apply(params, state, (x.at[1:].add(7.0), mask))
    assert not np.allclose(z_open[0], z[0])  # without causality token 0 sees key 3
