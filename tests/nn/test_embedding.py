"""Embedding and PositionalEmbedding against hand-set tables."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdl.nn.core import ShapeError
from fdl.nn.embedding import Embedding, PositionalEmbedding

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
