"""SimpleRNN, LSTM and GRU against explicit numpy step loops and hand-computed steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdl.nn.combinators import serial
from fdl.nn.core import ShapeError
from fdl.nn.dense import Dense
from fdl.nn.recurrent import GRU, LSTM, SimpleRNN

# float32 layer vs float64 numpy on O(1) values over a few steps: rounding stays ~1e-6.
TOL = dict(rtol=1e-5, atol=1e-5)
LENGTH, FEATURES, HIDDEN = 5, 3, 4


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_simple_rnn(p, x):
    h, hs = np.zeros(p["w_h"].shape[0]), []
    for x_t in x:
        h = np.tanh(x_t @ p["w_i"] + p["b"] + h @ p["w_h"])
        hs.append(h)
    return np.stack(hs)


def numpy_lstm(p, x):
    n = p["w_h"].shape[0]
    h, c, hs = np.zeros(n), np.zeros(n), []
    for x_t in x:
        z = x_t @ p["w_i"] + h @ p["w_h"] + p["b"]
        i, f, g, o = z[:n], z[n:2 * n], z[2 * n:3 * n], z[3 * n:]
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs)


def numpy_gru(p, x):
    n = p["w_h"].shape[0]
    h, hs = np.zeros(n), []
    for x_t in x:
        gx = x_t @ p["w_i"] + p["b_i"]
        gh = h @ p["w_h"] + p["b_h"]
        r = sigmoid(gx[:n] + gh[:n])
        z = sigmoid(gx[n:2 * n] + gh[n:2 * n])
        candidate = np.tanh(gx[2 * n:] + r * gh[2 * n:])
        h = (1 - z) * candidate + z * h
        hs.append(h)
    return np.stack(hs)


def numpy_reference(step_loop, params, x, return_sequences, bidirectional):
    if not bidirectional:
        hs = step_loop(params, x)
        return hs if return_sequences else hs[-1]
    forward = step_loop(params["forward"], x)
    backward = step_loop(params["backward"], x[::-1])[::-1]  # back in input order
    if return_sequences:
        return np.concatenate([forward, backward], axis=-1)
    return np.concatenate([forward[-1], backward[0]])


def random_params(layer, seed=0):
    """Init's structure with every leaf (biases too) replaced by normal draws."""
    _, params, _ = layer.init(jax.random.key(seed), (LENGTH, FEATURES))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: 0.5 * rng.normal(size=a.shape), params)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("make_layer,step_loop", [
    (SimpleRNN, numpy_simple_rnn), (LSTM, numpy_lstm), (GRU, numpy_gru)],
    ids=["simple_rnn", "lstm", "gru"])
def test_matches_numpy_step_loop(make_layer, step_loop, return_sequences, bidirectional):
    layer = make_layer(HIDDEN, return_sequences=return_sequences, bidirectional=bidirectional)
    params = random_params(layer)
    x = np.random.default_rng(1).normal(size=(LENGTH, FEATURES))
    out_shape, _, _ = layer.init(jax.random.key(0), (LENGTH, FEATURES))

    y, state = layer.apply(jax.tree.map(jnp.float32, params), {}, jnp.float32(x))

    width = 2 * HIDDEN if bidirectional else HIDDEN
    assert out_shape == ((LENGTH, width) if return_sequences else (width,))
    assert state == {}
    np.testing.assert_allclose(y, numpy_reference(step_loop, params, x, return_sequences, bidirectional),
                               **TOL)


def test_lstm_gate_order_by_hand():
    # One input, one unit, zero weights: each gate is sigmoid/tanh of its bias,
    # i = sigmoid(ln 3) = 0.75, f = sigmoid(ln 9) = 0.9, g = tanh(atanh 0.5) = 0.5, o = sigmoid(0) = 0.5.
    params = {"w_i": jnp.zeros((1, 4)), "w_h": jnp.zeros((1, 4)),
              "b": jnp.array([math.log(3), math.log(9), math.atanh(0.5), 0.0])}
    y, _ = LSTM(1, return_sequences=True).apply(params, {}, jnp.ones((2, 1)))
    c1 = 0.75 * 0.5                 # c_0 = 0
    c2 = 0.9 * c1 + 0.75 * 0.5
    np.testing.assert_allclose(y[:, 0], [0.5 * math.tanh(c1), 0.5 * math.tanh(c2)], rtol=1e-6)


def test_gru_reset_after_by_hand():
    # x = 1, h_0 = 0: r = sigmoid(0) = 0.5, z = sigmoid(ln 3) = 0.75, and with b_hn = 2
    # reset-after gives n = tanh(1 + r * 2) = tanh(2) (reset-before would give tanh(3)).
    params = {"w_i": jnp.array([[0.0, 0.0, 1.0]]), "w_h": jnp.zeros((1, 3)),
              "b_i": jnp.array([0.0, math.log(3), 0.0]), "b_h": jnp.array([0.0, 0.0, 2.0])}
    y, _ = GRU(1).apply(params, {}, jnp.ones((1, 1)))
    # h' = (1 - z) * n + z * h_0; the swapped form z * n would give 0.75 * tanh(2).
    np.testing.assert_allclose(y, [0.25 * math.tanh(2.0)], rtol=1e-6)


def test_lstm_forget_bias_initialization():
    _, params, _ = LSTM(2).init(jax.random.key(0), (LENGTH, FEATURES))
    np.testing.assert_array_equal(params["b"], [0, 0, 1, 1, 0, 0, 0, 0])
    _, params, _ = LSTM(2, unit_forget_bias=False).init(jax.random.key(0), (LENGTH, FEATURES))
    np.testing.assert_array_equal(params["b"], np.zeros(8))


def test_param_names_and_orthogonal_recurrent_blocks():
    _, params, _ = GRU(HIDDEN, bidirectional=True).init(jax.random.key(0), (LENGTH, FEATURES))
    assert set(params) == {"forward", "backward"}
    direction = params["forward"]
    assert {k: v.shape for k, v in direction.items()} == {
        "w_i": (FEATURES, 3 * HIDDEN), "w_h": (HIDDEN, 3 * HIDDEN),
        "b_i": (3 * HIDDEN,), "b_h": (3 * HIDDEN,)}
    for gate in range(3):  # each gate's recurrent block is orthogonal on its own
        block = direction["w_h"][:, gate * HIDDEN:(gate + 1) * HIDDEN]
        np.testing.assert_allclose(block @ block.T, np.eye(HIDDEN), atol=1e-5)
    assert not np.allclose(params["forward"]["w_i"], params["backward"]["w_i"])


def test_simple_rnn_activation():
    layer = SimpleRNN(2, activation="relu")
    params = {"w_i": -jnp.ones((1, 2)), "w_h": jnp.zeros((2, 2)), "b": jnp.array([0.0, 3.0])}
    y, _ = layer.apply(params, {}, jnp.ones((3, 1)))
    np.testing.assert_allclose(y, [0.0, 2.0])


@pytest.mark.parametrize("input_shape,match", [
    ((40,), r"^LSTM: expected input \(length, features\), got \(40,\) — add a feature axis "
            r"with Reshape\(\(40, 1\)\)$"),
    ((4, 5, 2), r"^LSTM: expected input \(length, features\), got \(4, 5, 2\) — merge the feature "
                r"axes with Reshape\(\(4, -1\)\)$"),
    ((0, 3), r"^LSTM: expected at least one time step, got input \(0, 3\)$"),
])
def test_bad_input_shape(input_shape, match):
    with pytest.raises(ShapeError, match=match):
        LSTM(2).init(jax.random.key(0), input_shape)


def test_shape_error_names_position_in_model():
    match = r"^serial\[1\] GRU: expected input \(length, features\), got \(4,\)"
    with pytest.raises(ShapeError, match=match):
        serial(Dense(4), GRU(2)).init(jax.random.key(0), (3,))


@pytest.mark.parametrize("make_layer,match", [
    (lambda: GRU(0), r"^GRU: hidden must be a positive int, got 0$"),
    (lambda: LSTM(2.0), r"^LSTM: hidden must be a positive int, got 2.0$"),
    (lambda: SimpleRNN(2, w_init="glorot"),
     r"^SimpleRNN w_init: unknown initializer 'glorot' — did you mean"),
    (lambda: LSTM(2, b_init="zero"), r"^LSTM b_init: unknown initializer 'zero' — did you mean 'zeros'"),
    (lambda: SimpleRNN(2, activation="tahn"), r"unknown activation 'tahn' — did you mean 'tanh'"),
])
def test_bad_constructor_arguments(make_layer, match):
    with pytest.raises(ValueError, match=match):
        make_layer()
