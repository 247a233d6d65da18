"""Training precision: mixed bfloat16 against float32 on MNIST-1D; dynamic loss scaling skips and recovers;
pure low precision builds its state with one optimizer init."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fdl
from fdl import nn
from fdl.train.precision import LossScaleState, cast_floating, dynamic_loss_scale, get_precision, updates_in_float32


@pytest.fixture(scope="module")
def mnist1d():
    dataset = fdl.data.load("mnist1d")
    return fdl.data.train_val_split(dataset, 0.1).train, dataset.test


def accuracy_and_state(data, precision, seed):
    train, test = data
    model = nn.models.mlp((100, 100))
    state, _ = fdl.fit(model, train, epochs=20, batch_size=100, verbose=0, precision=precision, seed=seed,
                       optimizer={"name": "adam", "learning_rate": 3e-3})
    return fdl.evaluate(model, state, test)["accuracy"], state


def test_mixed_bfloat16_is_within_a_point_of_float32_and_keeps_float32_params(mnist1d):
    # the mean test accuracy over 3 seeds (one seed's varies by ~2 points either way)
    float32 = np.mean([accuracy_and_state(mnist1d, "float32", seed)[0] for seed in range(3)])
    mixed = [accuracy_and_state(mnist1d, "mixed_bfloat16", seed) for seed in range(3)]
    assert abs(np.mean([accuracy for accuracy, _ in mixed]) - float32) <= 0.01, (mixed, float32)
    assert {leaf.dtype for leaf in jax.tree.leaves(mixed[0][1].params)} == {jnp.dtype(jnp.float32)}
    pure, state = accuracy_and_state(mnist1d, "bfloat16", 0)  # params and Adam's moments in bfloat16
    assert abs(pure - float32) <= 0.05, (pure, float32)
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.bfloat16)}
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim]  # Adam's mu and nu
    assert len(moments) == 2 * len(jax.tree.leaves(state.params))
    assert {leaf.dtype for leaf in moments} == {jnp.dtype(jnp.bfloat16)}


def test_loss_scaling_skips_a_step_with_non_finite_gradients_and_adjusts_the_scale():
    tx = dynamic_loss_scale(optax.sgd(0.1), initial_scale=8.0, period=2)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    # scaled gradients 8 * (1, 2, 3): unscaled and applied; two finite steps double the scale
    updates, state = tx.update({"w": jnp.array([8.0, 16.0, 24.0])}, state, params)
    np.testing.assert_allclose(updates["w"], [-0.1, -0.2, -0.3], rtol=1e-6)
    assert (float(state.scale), int(state.good_steps)) == (8.0, 1)
    _, state = tx.update({"w": jnp.array([8.0, 8.0, 8.0])}, state, params)
    assert (float(state.scale), int(state.good_steps)) == (16.0, 0)
    # an overflow: no update, the inner state kept, the scale halved (never below 1)
    before = state.inner
    updates, state = tx.update({"w": jnp.array([jnp.inf, 1.0, 1.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], np.zeros(3))
    assert float(state.scale) == 8.0 and int(state.good_steps) == 0
    jax.tree.map(np.testing.assert_array_equal, state.inner, before)


def test_mixed_float16_survives_a_forced_overflow_and_trains_on(mnist1d):
    train, _ = mnist1d
    x, y = train.x[:800] * 1e3, train.y[:800]  # big inputs: gradients times 2**15 overflow float16
    state, history = fdl.fit(nn.models.mlp((32,)), (x, y), epochs=3, batch_size=100, verbose=0,
                             precision="mixed_float16", optimizer={"name": "sgd", "learning_rate": 1e-6})
    assert isinstance(state.opt_state, LossScaleState)
    skipped = int(np.log2(2.0 ** 15 / float(state.opt_state.scale)))  # each skip halved it; none doubled
    assert 1 <= skipped < int(state.step) == 24
    assert all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]


class InitialState(fdl.train.callbacks.Callback):
    """Keeps a copy of the state fit starts from."""

    def on_train_begin(self, run):
        self.state = run.snapshot()


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_pure_low_precision_starts_from_the_cast_state_with_one_optimizer_init(name):
    inits, adam = [], optax.adam(1e-3)
    counted = optax.GradientTransformation(lambda params: inits.append(1) or adam.init(params), adam.update)
    model = nn.serial(nn.Dense(8), nn.BatchNorm(), nn.Relu(), nn.Dense(2))  # BatchNorm: float32 model state
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    initial = InitialState()
    fdl.fit(model, (x, (x[:, 0] > 0).astype(np.int32)), epochs=1, batch_size=8, verbose=0, seed=3,
            precision=name, optimizer=counted, callbacks=[initial])
    assert len(inits) == 1  # traced once, inside init_train_state
    # the reference: fit's former start-up, the float32 state cast and the optimizer initialized again
    mode, tx = get_precision(name), updates_in_float32(adam)
    tx = dynamic_loss_scale(tx) if mode.scales_loss else tx
    start = fdl.init_train_state(model, (4,), tx, 3)
    expected = start.replace(params=cast_floating(start.params, mode.param_dtype),
                             opt_state=tx.init(cast_floating(start.params, mode.state_dtype)))
    assert jax.tree.structure(initial.state) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(initial.state), jax.tree.leaves(expected)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert {leaf.dtype for leaf in jax.tree.leaves(initial.state.params)} == {jnp.dtype(mode.param_dtype)}


def test_a_precision_that_does_not_exist_is_named():
    with pytest.raises(ValueError, match=r"^precision: expected one of float32, bfloat16, float16, "
                                         r"mixed_bfloat16, mixed_float16, got 'fp16'"):
        get_precision("fp16")
    with pytest.raises(ValueError, match=r"^precision: 'bfloat16' casts inside fdl's step"):
        fdl.fit(None, np.zeros((8, 2), np.float32), step=lambda s, b: (s, {"loss": 0.0}), verbose=0,
                state=fdl.init_train_state(nn.Dense(2), (2,), optax.sgd(0.1), 0), precision="bfloat16",
                batch_size=4)
