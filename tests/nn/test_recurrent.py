"""SimpleRNN, LSTM and GRU against explicit numpy step loops and hand-computed steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdl
from fdl.nn.activations import Identity
from fdl.nn.combinators import parallel, serial
from fdl.nn.core import ShapeError
from fdl.nn.dense import Dense
from fdl.nn.pooling import GlobalAvgPool
from fdl.nn.recurrent import GRU, LSTM, SimpleRNN

# float32 layer vs float64 numpy on O(1) values over a few steps: rounding stays ~1e-6.
TOL = dict(rtol=1e-5, atol=1e-5)
LENGTH, FEATURES, HIDDEN = 5, 3, 4


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# Each loop returns (every step's h, the final state); `initial` is h0 or (h0, c0), None for zeros.
def numpy_simple_rnn(p, x, initial=None):
    h, hs = np.zeros(p["w_h"].shape[0]) if initial is None else np.asarray(initial), []
    for x_t in x:
        h = np.tanh(x_t @ p["w_i"] + p["b"] + h @ p["w_h"])
        hs.append(h)
    return np.stack(hs), h


def numpy_lstm(p, x, initial=None):
    n = p["w_h"].shape[0]
    h, c = (np.zeros(n), np.zeros(n)) if initial is None else map(np.asarray, initial)
    hs = []
    for x_t in x:
        z = x_t @ p["w_i"] + h @ p["w_h"] + p["b"]
        i, f, g, o = z[:n], z[n:2 * n], z[2 * n:3 * n], z[3 * n:]
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs), (h, c)


def numpy_gru(p, x, initial=None):
    n = p["w_h"].shape[0]
    h, hs = np.zeros(n) if initial is None else np.asarray(initial), []
    for x_t in x:
        gx = x_t @ p["w_i"] + p["b_i"]
        gh = h @ p["w_h"] + p["b_h"]
        r = sigmoid(gx[:n] + gh[:n])
        z = sigmoid(gx[n:2 * n] + gh[n:2 * n])
        candidate = np.tanh(gx[2 * n:] + r * gh[2 * n:])
        h = (1 - z) * candidate + z * h
        hs.append(h)
    return np.stack(hs), h


def numpy_reference(step_loop, params, x, return_sequences, bidirectional, initial=None):
    """(the layer's outputs, its final state) from the step loop, as the module docstring says."""
    if not bidirectional:
        hs, final = step_loop(params, x, initial)
        return (hs if return_sequences else hs[-1]), final
    forward_initial, backward_initial = (None, None) if initial is None else initial
    forward, forward_final = step_loop(params["forward"], x, forward_initial)
    backward, backward_final = step_loop(params["backward"], x[::-1], backward_initial)
    backward = backward[::-1]  # back in input order
    if return_sequences:
        outputs = np.concatenate([forward, backward], axis=-1)
    else:
        outputs = np.concatenate([forward[-1], backward[0]])
    return outputs, (forward_final, backward_final)


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
    expected, _ = numpy_reference(step_loop, params, x, return_sequences, bidirectional)
    np.testing.assert_allclose(y, expected, **TOL)


def random_state(layer_kind, bidirectional, seed):
    """A non-zero initial state in the layer's layout: h0, (h0, c0), or (forward, backward) of them."""
    rng = np.random.default_rng(seed)
    draw = lambda: rng.normal(size=HIDDEN)
    one = (draw(), draw()) if layer_kind is LSTM else draw()
    if bidirectional:
        return one, ((draw(), draw()) if layer_kind is LSTM else draw())
    return one


def state_shape(layer_kind, bidirectional):
    one = ((HIDDEN,), (HIDDEN,)) if layer_kind is LSTM else (HIDDEN,)
    return (one, one) if bidirectional else one


def assert_trees_close(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(jax.tree.map(jnp.asarray, expected))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), actual, expected)


@pytest.mark.parametrize("initial_state,return_state", [(True, True), (False, True), (True, False)],
                         ids=["initial_and_final", "final_only", "initial_only"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("make_layer,step_loop", [
    (SimpleRNN, numpy_simple_rnn), (LSTM, numpy_lstm), (GRU, numpy_gru)],
    ids=["simple_rnn", "lstm", "gru"])
def test_states_match_numpy_step_loop(make_layer, step_loop, return_sequences, bidirectional,
                                      initial_state, return_state):
    layer = make_layer(HIDDEN, return_sequences=return_sequences, bidirectional=bidirectional,
                       initial_state=initial_state, return_state=return_state)
    sequence_shape, states = (LENGTH, FEATURES), state_shape(make_layer, bidirectional)
    input_shape = (sequence_shape, states) if initial_state else sequence_shape
    out_shape, params, _ = layer.init(jax.random.key(0), input_shape)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: 0.5 * rng.normal(size=a.shape), params)  # biases too
    x = rng.normal(size=sequence_shape)
    initial = random_state(make_layer, bidirectional, seed=2) if initial_state else None

    to32 = lambda tree: jax.tree.map(jnp.float32, tree)
    y, _ = layer.apply(to32(params), {}, to32((x, initial)) if initial_state else jnp.float32(x))

    outputs, final = numpy_reference(step_loop, params, x, return_sequences, bidirectional, initial)
    expected = (outputs, final) if return_state else outputs
    assert_trees_close(y, expected)  # (h, c) for LSTM, (forward, backward) if bidirectional
    width = 2 * HIDDEN if bidirectional else HIDDEN
    outputs_shape = (LENGTH, width) if return_sequences else (width,)
    assert out_shape == ((outputs_shape, states) if return_state else outputs_shape)
    assert jax.tree.map(jnp.shape, y) == out_shape


@pytest.mark.parametrize("make_layer,step_loop", [
    (SimpleRNN, numpy_simple_rnn), (LSTM, numpy_lstm), (GRU, numpy_gru)],
    ids=["simple_rnn", "lstm", "gru"])
def test_encoder_final_state_starts_the_decoder_as_one_loop(make_layer, step_loop):
    # The same weights read 3 steps, hand their state over, then read 4 more: the decoder's
    # outputs and final state are those of one loop over all 7 steps (a batch of 2, batched).
    encoder = make_layer(HIDDEN, return_state=True)
    decoder = make_layer(HIDDEN, initial_state=True, return_sequences=True, return_state=True)
    _, params, _ = encoder.init(jax.random.key(0), (3, FEATURES))
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda a: 0.5 * rng.normal(size=a.shape), params)
    sequence = rng.normal(size=(2, 7, FEATURES))
    decoder_shape, _, _ = decoder.init(jax.random.key(0), ((4, FEATURES), state_shape(make_layer, False)))
    assert decoder_shape == ((4, HIDDEN), state_shape(make_layer, False))

    params32 = jax.tree.map(jnp.float32, params)
    (_, handed_over), _ = fdl.batched(encoder)(params32, {}, jnp.float32(sequence[:, :3]))
    (outputs, final), _ = fdl.batched(decoder)(params32, {}, (jnp.float32(sequence[:, 3:]), handed_over))

    for i in range(2):
        hs, expected_final = step_loop(params, sequence[i])
        np.testing.assert_allclose(outputs[i], hs[3:], **TOL)
        assert_trees_close(jax.tree.map(lambda a: a[i], final), expected_final)


def test_lstm_state_order_is_h_then_c_by_hand():
    # Zero weights: i = sigmoid(ln 3) = 0.75, f = sigmoid(ln 9) = 0.9, g = tanh(atanh 0.5) = 0.5,
    # o = sigmoid(0) = 0.5. From c0 = 2: c1 = 0.9 * 2 + 0.75 * 0.5 = 2.175, h1 = 0.5 * tanh(c1);
    # h0 = 7 only reaches the gates through w_h = 0, so the output ignores it.
    params = {"w_i": jnp.zeros((1, 4)), "w_h": jnp.zeros((1, 4)),
              "b": jnp.array([math.log(3), math.log(9), math.atanh(0.5), 0.0])}
    layer = LSTM(1, initial_state=True, return_state=True)
    y, (h, c) = layer.apply(params, {}, (jnp.ones((1, 1)), (jnp.array([7.0]), jnp.array([2.0]))))[0]
    np.testing.assert_allclose(c, [2.175], rtol=1e-6)
    np.testing.assert_allclose(h, [0.5 * math.tanh(2.175)], rtol=1e-6)
    np.testing.assert_allclose(y, h, rtol=0)  # the last output is the final h


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


@pytest.mark.parametrize("make_layer,input_shape,match", [
    (lambda: GRU(4, initial_state=True), (5, 3),
     r"^GRU: initial_state=True: expected input \(sequence, h\) with shapes \(\(length, features\), "
     r"\(4,\)\), got \(5, 3\) — pass the sequence and the initial state as a pair, or drop "
     r"initial_state=True$"),
    (lambda: LSTM(4, initial_state=True), ((5, 3), (4,)),
     r"^LSTM: initial_state=True: expected the initial state \(h, c\) with shapes \(\(4,\), \(4,\)\), "
     r"got \(4,\) — per example, h and c are \(hidden,\) = \(4,\)$"),
    (lambda: GRU(4, initial_state=True, bidirectional=True), ((5, 3), (4,)),
     r"^GRU: initial_state=True: expected the initial state \(forward h, backward h\) with shapes "
     r"\(\(4,\), \(4,\)\), got \(4,\) — per example, h is \(hidden,\) = \(4,\)$"),
    (lambda: SimpleRNN(4, initial_state=True), ((40,), (4,)),
     r"^SimpleRNN: the sequence of \(sequence, h\): expected input \(length, features\), got \(40,\) "
     r"— add a feature axis with Reshape\(\(40, 1\)\)$"),
    (lambda: LSTM(4), ((5, 3), ((4,), (4,))),
     r"^LSTM: expected input \(length, features\), got the tuple of shapes \(\(5, 3\), \(\(4,\), "
     r"\(4,\)\)\) — to pass an initial state with the sequence, construct the layer with "
     r"initial_state=True$"),
], ids=["no_pair", "lstm_state_not_a_pair", "bidirectional_state", "bad_sequence", "flag_missing"])
def test_bad_initial_state_shapes(make_layer, input_shape, match):
    with pytest.raises(ShapeError, match=match):
        make_layer().init(jax.random.key(0), input_shape)


def test_initial_state_error_names_position_in_model():
    # h0 from Dense(3) for a GRU of 4 units; lists are accepted as shapes, as tuples.
    model = serial(parallel(Identity(), serial(GlobalAvgPool(), Dense(3))), GRU(4, initial_state=True))
    with pytest.raises(ShapeError, match=r"^serial\[1\] GRU: initial_state=True: expected the "
                                         r"initial state h with shapes \(4,\), got \(3,\)"):
        model.init(jax.random.key(0), (5, 2))
    out_shape, _, _ = GRU(4, initial_state=True).init(jax.random.key(0), [[5, 2], [4]])
    assert out_shape == (4,)


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
