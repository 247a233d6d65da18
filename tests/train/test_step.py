"""make_loss_fn, make_train_step (batch and per-example), guard and all_finite against hand-written JAX."""
import collections

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fdl
from fdl import nn
from fdl.nn.core import Layer
from fdl.objectives import PREDICTIONS
from fdl.train.state import step_key
from fdl.train.step import all_finite, guard, make_loss_fn, make_train_step, per_example_grads

# float32 through a few tiny matmuls, with the same ops in a different order
# (vmap of grad vs grad of a mean): a few ulps apart.
RTOL, ATOL = 1e-5, 1e-6


def data(n=6, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.int32)
    return x, y


def mean_over_examples() -> optax.GradientTransformation:
    """Averages per-example gradients (leading axis): with sgd after it, a plain SGD step."""
    return optax.stateless(lambda updates, params: jax.tree.map(lambda g: jnp.mean(g, 0), updates))


def noise_augment(key, x):
    """A random augmentation of one example, so a key mix-up changes the numbers."""
    return x + 0.5 * jax.random.normal(key, x.shape)


def zero_augment(key, x):
    del key
    return jnp.zeros_like(x)


def dropout_mlp():
    return nn.serial(nn.Dense(4), nn.Dropout(0.5), nn.Tanh(), nn.Dense(3))


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
    chex.assert_trees_all_equal_structs(actual, expected)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), actual, expected)


# --- make_loss_fn ---------------------------------------------------------------------------------

def test_loss_fn_of_a_dense_layer_is_the_mean_squared_error_by_hand():
    model = nn.Dense(2)
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -1.0])}
    x = np.array([[1.0, 2.0], [-1.0, 0.0], [3.0, 1.0]], np.float32)
    y = np.array([[0.0, 1.0], [2.0, 2.0], [1.0, -1.0]], np.float32)
    loss, (model_state, outputs) = make_loss_fn(model, fdl.losses.mse)(params, {}, x, y, jax.random.key(0))
    expected_outputs = x @ np.asarray(params["w"]) + np.asarray(params["b"])
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-6)
    np.testing.assert_allclose(loss, np.mean((expected_outputs - y) ** 2), rtol=1e-6)
    assert model_state == {}


def test_loss_fn_augments_and_drops_out_example_i_with_its_own_keys():
    """The key contract: split(key) -> (augment, dropout); example i takes row i of each split."""
    model = nn.Dropout(0.5)
    x = np.arange(24, dtype=np.float32).reshape(4, 6) + 1.0
    key = jax.random.key(3)
    _, (_, outputs) = jax.jit(make_loss_fn(model, fdl.losses.mse, noise_augment))({}, {}, x, np.zeros_like(x), key)

    @jax.jit
    def by_hand(x_i, augment_key, dropout_key):
        augmented = x_i + 0.5 * jax.random.normal(augment_key, (6,))
        return jnp.where(jax.random.bernoulli(dropout_key, 0.5, (6,)), augmented / 0.5, 0.0)

    augment_key, dropout_key = jax.random.split(key)
    augment_keys, dropout_keys = jax.random.split(augment_key, 4), jax.random.split(dropout_key, 4)
    for i in range(4):
        np.testing.assert_allclose(outputs[i], by_hand(x[i], augment_keys[i], dropout_keys[i]), rtol=1e-6)


# --- make_train_step ------------------------------------------------------------------------------

@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_sgd_step_on_a_dense_layer_is_params_minus_lr_times_the_hand_written_gradient(jit):
    x, y = data()
    model, learning_rate = nn.Dense(3), 0.3
    state = fdl.init_train_state(model, (5,), optax.sgd(learning_rate), 0)
    step = make_train_step(model, fdl.losses.cross_entropy, optax.sgd(learning_rate))
    new_state, logs = (jax.jit(step) if jit else step)(state, (x, y))
    loss, outputs = logs["loss"], logs[PREDICTIONS][0]

    def hand_loss(params):
        logits = x @ params["w"] + params["b"]
        return -jnp.mean(jax.nn.log_softmax(logits)[np.arange(len(y)), y])

    grads = jax.grad(hand_loss)(state.params)
    assert_trees_close(new_state.params, jax.tree.map(lambda p, g: p - learning_rate * g, state.params, grads))
    np.testing.assert_allclose(loss, hand_loss(state.params), rtol=1e-6)
    np.testing.assert_allclose(outputs, x @ state.params["w"] + state.params["b"], rtol=1e-6)
    assert int(new_state.step) == 1
    np.testing.assert_array_equal(new_state.rng, state.rng)  # constant per run; steps fold in the step


def test_a_second_step_compiles_nothing():
    traces = []
    model = nn.serial(nn.Dense(3), nn.activations.elementwise("Counting", lambda x: traces.append(1) or x))
    x, y = data()
    state = fdl.init_train_state(model, (5,), optax.sgd(0.1), 0)
    step = jax.jit(make_train_step(model, fdl.losses.cross_entropy, optax.sgd(0.1)))
    for _ in range(3):
        state, _ = step(state, (x, y))
    assert len(traces) == 1


# --- per_example=True -----------------------------------------------------------------------------

def test_per_example_step_with_an_augmentation_that_zeroes_the_inputs_leaves_the_weights_unchanged():
    """x @ w with x = 0 has zero gradient in w: the per-example grads must see the augmented x."""
    x, y = data()
    model = nn.Dense(3, use_bias=False)
    optimizer = optax.chain(mean_over_examples(), optax.sgd(1.0))
    state = fdl.init_train_state(model, (5,), optimizer, 0)
    step = make_train_step(model, fdl.losses.cross_entropy, optimizer, augment=zero_augment, per_example=True)
    new_state, logs = jax.jit(step)(state, (x, y))
    loss, outputs = logs["loss"], logs[PREDICTIONS][0]
    np.testing.assert_array_equal(new_state.params["w"], state.params["w"])
    np.testing.assert_array_equal(outputs, np.zeros((6, 3)))
    np.testing.assert_allclose(loss, np.log(3.0), rtol=1e-6)  # uniform logits

    grads = per_example_grads(model, fdl.losses.cross_entropy, state.params, {}, x, y, jax.random.key(0),
                              augment=zero_augment)
    np.testing.assert_array_equal(grads["w"], np.zeros((6, 5, 3)))


def test_per_example_gradients_average_to_the_batch_gradient_with_dropout_and_augmentation():
    x, y = data(n=8)
    model = dropout_mlp()
    state = fdl.init_train_state(model, (5,), optax.sgd(0.1), 1)
    key = jax.random.key(7)
    grads = jax.jit(lambda p: per_example_grads(model, fdl.losses.cross_entropy, p, state.model_state, x, y, key,
                                                augment=noise_augment))(state.params)
    chex.assert_tree_shape_prefix(grads, (8,))
    batch_loss = make_loss_fn(model, fdl.losses.cross_entropy, noise_augment)
    batch_grads = jax.jit(jax.grad(lambda p: batch_loss(p, state.model_state, x, y, key)[0]))(state.params)
    assert_trees_close(jax.tree.map(lambda g: jnp.mean(g, 0), grads), batch_grads)


def test_per_example_step_equals_the_batch_step_with_dropout_and_augmentation():
    """Same loss, same outputs, same update: the per-example path only reorders the sum."""
    x, y = data(n=8)
    model = dropout_mlp()
    start = fdl.init_train_state(model, (5,), optax.sgd(0.5), 2)
    batch_step = jax.jit(make_train_step(model, fdl.losses.cross_entropy, optax.sgd(0.5), augment=noise_augment))
    per_example_optimizer = optax.chain(mean_over_examples(), optax.sgd(0.5))
    per_example_step = jax.jit(make_train_step(model, fdl.losses.cross_entropy, per_example_optimizer,
                                               augment=noise_augment, per_example=True))
    batch_state, per_example_state = start, start.replace(opt_state=per_example_optimizer.init(start.params))
    for _ in range(2):  # the second step checks the step key advances the same way
        batch_state, batch_logs = batch_step(batch_state, (x, y))
        per_example_state, logs = per_example_step(per_example_state, (x, y))
        batch_loss, batch_outputs = batch_logs["loss"], batch_logs[PREDICTIONS][0]
        loss, outputs = logs["loss"], logs[PREDICTIONS][0]
        np.testing.assert_allclose(loss, batch_loss, rtol=RTOL)
        np.testing.assert_allclose(outputs, batch_outputs, rtol=RTOL, atol=ATOL)
        assert_trees_close(per_example_state.params, batch_state.params)


def test_per_example_loss_of_example_i_uses_the_keys_the_batch_gives_example_i():
    """Example i alone, with row i of the step's key split, gives row i of the per-example grads."""
    x, y = data(n=4)
    model = dropout_mlp()
    state = fdl.init_train_state(model, (5,), optax.sgd(0.1), 0)
    key = step_key(state)
    grads = jax.jit(lambda p: per_example_grads(model, fdl.losses.cross_entropy, p, state.model_state, x, y, key,
                                                augment=noise_augment))(state.params)

    @jax.jit
    @jax.grad
    def single(params, x_i, y_i, augment_key, dropout_key):
        output, _ = model.apply(params, state.model_state, noise_augment(augment_key, x_i), key=dropout_key,
                                train=True)
        return fdl.losses.cross_entropy(output, y_i)

    augment_key, dropout_key = jax.random.split(key)
    augment_keys, dropout_keys = jax.random.split(augment_key, 4), jax.random.split(dropout_key, 4)
    for i in range(4):
        assert_trees_close(jax.tree.map(lambda g: g[i], grads),
                           single(state.params, x[i], y[i], augment_keys[i], dropout_keys[i]))


def counting_marker(counts: collections.Counter) -> Layer:
    """An identity layer that counts how often it is traced forward, and differentiated."""

    @jax.custom_vjp
    def identity(x):
        return x

    def forward(x):
        counts["forward"] += 1
        return x, None

    def backward(_, cotangent):
        counts["backward"] += 1
        return (cotangent,)

    identity.defvjp(forward, backward)

    def init(key, input_shape):
        del key
        return tuple(input_shape), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        del params, key, train
        counts["apply"] += 1
        return identity(x), state

    return Layer(init, apply, "Marker")


@pytest.mark.parametrize("per_example", [False, True])
def test_a_step_applies_and_differentiates_the_model_once(per_example):
    counts = collections.Counter()
    model = nn.serial(nn.Dense(4), counting_marker(counts), nn.Dense(3))
    optimizer = optax.chain(mean_over_examples(), optax.sgd(0.1)) if per_example else optax.sgd(0.1)
    x, y = data()
    state = fdl.init_train_state(model, (5,), optimizer, 0)
    step = make_train_step(model, fdl.losses.cross_entropy, optimizer, augment=noise_augment,
                           per_example=per_example)
    jax.make_jaxpr(step)(state, (x, y))
    assert dict(counts) == {"apply": 1, "forward": 1, "backward": 1}


def test_per_example_with_batch_norm_is_refused_with_the_fix():
    model = nn.serial(nn.Dense(4), nn.BatchNorm(), nn.Dense(3))
    x, y = data()
    state = fdl.init_train_state(model, (5,), optax.sgd(0.1), 0)
    step = make_train_step(model, fdl.losses.cross_entropy, optax.sgd(0.1), per_example=True)
    with pytest.raises(ValueError, match=r"per_example=True: .*BatchNorm.* replace BatchNorm with LayerNorm"):
        step(state, (x, y))


# --- guard and all_finite -------------------------------------------------------------------------

def test_guard_stops_at_the_first_non_finite_step_and_keeps_the_last_finite_state():
    x, y = data(n=20)
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 20, 4)]
    bad = 2
    batches[bad][0][1, 3] = np.nan
    model = nn.serial(nn.Dense(4), nn.Tanh(), nn.Dense(3))
    state = fdl.init_train_state(model, (5,), optax.sgd(0.1), 0)
    step = make_train_step(model, fdl.losses.cross_entropy, optax.sgd(0.1))
    guarded = jax.jit(guard(step))
    plain = jax.jit(step)

    reference, halted, history = state, jnp.zeros((), bool), []
    for i, (xb, yb) in enumerate(batches):
        state, logs, halted = guarded(state, (xb, yb), halted)
        history.append((state, bool(halted), bool(np.isfinite(logs["loss"]))))
        if i < bad:
            reference, _ = plain(reference, (xb, yb))
    assert [h for _, h, _ in history] == [False, False, True, True, True]
    assert not history[bad][2]
    assert int(state.step) == bad
    for kept, _, _ in history[bad:]:  # the state no longer moves once halted, even on good batches
        chex.assert_trees_all_equal(kept, history[bad - 1][0])
    assert_trees_close(state.params, reference.params)


def test_guard_catches_params_that_overflow_while_the_loss_is_finite():
    x, y = data()
    x = 100 * x  # gradients in w of order 10, so lr * grad passes float32's 3.4e38
    model = nn.Dense(3)
    optimizer = optax.sgd(3e38)
    start = fdl.init_train_state(model, (5,), optimizer, 0)
    state, logs, halted = guard(make_train_step(model, fdl.losses.cross_entropy, optimizer))(
        start, (x, y), jnp.zeros((), bool))
    assert np.isfinite(logs["loss"]) and bool(halted)
    chex.assert_trees_all_equal(state, start)


@pytest.mark.parametrize("tree, expected", [
    ({}, True),
    ({"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}, True),
    ({"a": {"w": np.array([1.0, np.nan])}, "b": np.ones(2)}, False),
    ([np.ones(2), (np.array([np.inf]),)], False),
    ({"w": np.array(-np.inf, np.float32)}, False),
    ({"step": np.array(3, np.int32), "w": np.full(4, 3e38, np.float32)}, True),
], ids=["empty", "finite", "nan", "inf", "neg-inf-scalar", "int-and-huge"])
def test_all_finite_agrees_with_numpy(tree, expected):
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(tree)) == expected
    result = all_finite(tree)
    chex.assert_shape(result, ())
    assert bool(result) == expected
    assert bool(jax.jit(all_finite)(tree)) == expected


def test_all_finite_is_the_one_reduction_of_the_guard_and_the_loss_scaling():
    from fdl.train import finite, precision, step
    assert step.all_finite is precision.all_finite is finite.all_finite
