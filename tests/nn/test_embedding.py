"""Embedding and PositionalEmbedding against hand-set tables; rotary embeddings against numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdl.nn.core import ShapeError
from fdl.nn.embedding import Embedding, PositionalEmbedding, RotaryEmbedding, rotary_embedding

TABLE = jnp.arange(15, dtype=jnp.float32).reshape(5, 3)  # row i = [3i, 3i+1, 3i+2]


def test_embedding_looks_up_rows():
    layer = Embedding(5, 3)
    out_shape, params, state = layer.init(jax.random.key(0), (4,))
    assert out_shape == (4, 3) and params["embedding"].shape == (5, 3) and state == {}
    y, _ = layer.apply({"embedding": TABLE}, state, jnp.array([2, 0, 2, 4]))
    np.testing.assert_array_equal(y, [[6, 7, 8], [0, 1, 2], [6, 7, 8], [12, 13, 14]])


def test_embedding_gradient_reaches_only_used_rows():
    layer, ids = Embedding(5, 3), jnp.array([2, 0, 2])
    weights = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    grad = jax.grad(lambda p: jnp.sum(layer.apply(p, {}, ids)[0] * weights))({"embedding": TABLE})
    # d/d row r = sum of the weights of the positions holding id r.
    expected = np.zeros((5, 3))
    expected[0], expected[2] = weights[1], weights[0] + weights[2]
    np.testing.assert_array_equal(grad["embedding"], expected)


@pytest.mark.parametrize("bad_id", [5, -1])
def test_embedding_out_of_range_id_reads_nan(bad_id):
    y, _ = jax.jit(lambda x: Embedding(5, 3).apply({"embedding": TABLE}, {}, x))(jnp.array([1, bad_id]))
    np.testing.assert_array_equal(y[0], [3, 4, 5])
    assert np.all(np.isnan(y[1]))


def test_embedding_default_init_is_standard_normal():
    _, params, _ = Embedding(1000, 16).init(jax.random.key(1), (4,))
    assert abs(float(jnp.std(params["embedding"])) - 1.0) < 0.03  # 16k draws: std error ~0.006


def test_embedding_float_input_raises():
    with pytest.raises(TypeError, match=r"Embedding: expected integer token ids, got float32 input"):
        Embedding(5, 3).apply({"embedding": TABLE}, {}, jnp.array([1.0, 2.0]))


@pytest.mark.parametrize("make,match", [
    (lambda: Embedding(0, 3), r"Embedding: vocab_size must be a positive int, got 0"),
    (lambda: Embedding(5, 2.5), r"Embedding: features must be a positive int, got 2\.5"),
    (lambda: Embedding(5, 3, w_init="normall"), r"Embedding w_init: unknown initializer 'normall'"),
    (lambda: PositionalEmbedding(-1, 3), r"PositionalEmbedding: max_length must be a positive int"),
])
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_positional_embedding_adds_the_first_rows():
    layer = PositionalEmbedding(5, 3)
    out_shape, params, _ = layer.init(jax.random.key(0), (2, 3))
    assert out_shape == (2, 3) and params["embedding"].shape == (5, 3)
    x = jnp.array([[1.0, 1.0, 1.0], [-1.0, 0.0, 1.0]])
    y, _ = layer.apply({"embedding": TABLE}, {}, x)
    np.testing.assert_array_equal(y, [[1, 2, 3], [2, 4, 6]])


def test_positional_embedding_default_init_stddev():
    _, params, _ = PositionalEmbedding(1000, 16).init(jax.random.key(2), (10, 16))
    np.testing.assert_allclose(float(jnp.std(params["embedding"])), 0.02, rtol=0.03)


@pytest.mark.parametrize("input_shape,match", [
    ((6, 3), r"PositionalEmbedding: sequence length 6 exceeds max_length=5"),
    ((4, 2), r"PositionalEmbedding: expected 3 features, got input \(4, 2\)"),
    ((4,), r"PositionalEmbedding: expected input \(length, features\), got \(4,\)"),
])
def test_positional_embedding_shape_errors(input_shape, match):
    with pytest.raises(ShapeError, match=match):
        PositionalEmbedding(5, 3).init(jax.random.key(0), input_shape)


def numpy_rope_rotate_half(x, positions, base=10000.0):
    """GPT-NeoX layout, by explicit 2x2 rotations: pair (i, i + dim/2) turns by position * base^(-2i/dim)."""
    y = np.array(x, dtype=np.float64)
    half = x.shape[-1] // 2
    for t, position in enumerate(positions):
        for i in range(half):
            angle = position * base ** (-2.0 * i / x.shape[-1])
            a, b = x[t, ..., i], x[t, ..., i + half]
            y[t, ..., i] = a * np.cos(angle) - b * np.sin(angle)
            y[t, ..., i + half] = b * np.cos(angle) + a * np.sin(angle)
    return y


def numpy_rope_interleaved(x, positions, base=10000.0):
    """RoFormer / Meta's Llama layout: adjacent features (2i, 2i + 1) form a pair."""
    dim = x.shape[-1]
    z = x[..., 0::2] + 1j * x[..., 1::2]
    theta = base ** (-2.0 * np.arange(dim // 2) / dim)
    angles = np.asarray(positions, float).reshape((-1,) + (1,) * (x.ndim - 1)) * theta
    z = z * np.exp(1j * angles)
    return np.stack([z.real, z.imag], axis=-1).reshape(x.shape)


@pytest.mark.parametrize("shape", [(6, 8), (5, 2, 4)], ids=["features", "heads"])
@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_rotary_embedding_matches_numpy_rotate_half(shape, base):
    x = np.random.default_rng(0).normal(size=shape)
    y = rotary_embedding(jnp.float32(x), base=base)
    assert y.dtype == jnp.float32
    # float32 angles up to 5 rad and a few products: ~1e-6.
    np.testing.assert_allclose(y, numpy_rope_rotate_half(x, range(shape[0]), base), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[0], x[0], rtol=1e-6)  # position 0 is not rotated


def test_interleaved_weights_convert_by_permuting_features():
    """The docstring's recipe: interleaved RoPE == rotate-half RoPE on features permuted by `perm`."""
    x = np.random.default_rng(1).normal(size=(5, 2, 6))
    perm = np.concatenate([np.arange(0, 6, 2), np.arange(1, 6, 2)])
    np.testing.assert_allclose(rotary_embedding(jnp.float32(x[..., perm])),
                               numpy_rope_interleaved(x, range(5))[..., perm], rtol=1e-5, atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(2)
    q_vector, k_vector = rng.normal(size=(2, 8))
    length = 7
    q = rotary_embedding(jnp.float32(np.tile(q_vector, (length, 1))))
    k = rotary_embedding(jnp.float32(np.tile(k_vector, (length, 1))))
    scores = np.asarray(q @ k.T)  # scores[m, n] = f(m - n): constant along every diagonal
    for offset in range(-length + 1, length):
        diagonal = np.diagonal(scores, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(scores[0, 1], scores[1, 0])  # but not symmetric in m - n
    # Shifting every position by the same amount leaves all scores unchanged.
    positions = jnp.arange(length)
    x_q, x_k = (jnp.float32(rng.normal(size=(length, 2, 8))) for _ in range(2))
    before = jnp.einsum("qhd,khd->hqk", rotary_embedding(x_q, positions=positions),
                        rotary_embedding(x_k, positions=positions))
    after = jnp.einsum("qhd,khd->hqk", rotary_embedding(x_q, positions=positions + 11),
                       rotary_embedding(x_k, positions=positions + 11))
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def test_rotary_embedding_layer_and_errors():
    layer = RotaryEmbedding(base=500000.0)
    out_shape, params, state = layer.init(jax.random.key(0), (4, 2, 6))
    assert out_shape == (4, 2, 6) and params == {} and state == {}
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 2, 6)), jnp.bfloat16)
    y, _ = layer.apply({}, {}, x)
    assert y.dtype == jnp.bfloat16
    with pytest.raises(ShapeError, match=r"^RotaryEmbedding: expected input \(length, \.\.\., dim\) "
                                         r"with dim even, got \(4, 5\)"):
        layer.init(jax.random.key(0), (4, 5))
    with pytest.raises(ValueError, match=r"^RotaryEmbedding: base must be > 0, got -1"):
        RotaryEmbedding(base=-1)
    with pytest.raises(ValueError, match=r"^rotary_embedding: the last axis must be even"):
        rotary_embedding(jnp.ones((3, 5)))
