"""Pytree batches through `fit`: objectives on dicts and bare arrays, custom steps, their errors.

Every comparison is against the (x, y) loss path or a hand-written JAX loop over
`fdl.data.batch_indices`: data order depends only on (the run's data key, epoch, n),
keys only on the step, so the paths see the same batches and the same dropout masks.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fdl
from fdl import nn
from fdl.data import batch_indices
from fdl.objectives import PREDICTIONS, reconstruction, supervised
from fdl.train.epoch import host_batches, take
from fdl.train.state import data_key

N, FEATURES, CLASSES, BATCH_SIZE, EPOCHS, SEED = 44, 5, 3, 8, 2, 3  # 5 steps an epoch, 4 examples dropped
# The dict objective below is written with optax, the loss path vmaps fdl.losses: the same
# float32 formula with the ops grouped differently, a few ulps apart after two epochs.
TOLERANCE = dict(rtol=1e-6, atol=1e-6)
TIMING = ("time_s", "steps_per_s")  # wall-clock keys of a history row, never equal across runs


def classification(n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = np.argmax(x[:, :CLASSES] + 0.3 * rng.normal(size=(n, CLASSES)), axis=1).astype(np.int32)
    return x, y


def classifier():
    return nn.serial(nn.Dense(8), nn.Relu(), nn.Dropout(0.2), nn.Dense(CLASSES))  # dropout: keys must agree


def dict_cross_entropy(apply, params, model_state, batch, key):
    """The supervised objective by hand, on a dict batch {"x": (b, 5), "y": (b,) int}."""
    model_key = None if key is None else jax.random.split(key)[1]  # the dropout stream (fdl.objectives)
    logits, model_state = apply(params, model_state, batch["x"], key=model_key)
    value = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
    return value, (model_state, {PREDICTIONS: (logits, batch["y"])})


def with_first_feature(apply, params, model_state, batch, key):
    """dict_cross_entropy plus logs["first_feature"], the batch mean of x[:, 0] (independent of params)."""
    value, (model_state, logs) = dict_cross_entropy(apply, params, model_state, batch, key)
    return value, (model_state, {**logs, "first_feature": jnp.mean(batch["x"][:, 0])})


def fit(model, train, **options):
    options = dict(epochs=EPOCHS, batch_size=BATCH_SIZE, seed=SEED, verbose=0, **options)
    return fdl.fit(model, train, **options)


def assert_one_line(error):
    # str(), not pytest's match text: an error raised while jax traces gets jax's traceback
    # note (PEP 678 __notes__) on top, which is not part of the message.
    assert "\n" not in str(error.value), str(error.value)


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.fixture(scope="module")
def loss_fit():
    """(state, history) of the Keras path: fit(model, (x, y), loss="cross_entropy") with val."""
    x, y = classification()
    return fit(classifier(), (x, y), val=classification(20, seed=1), loss="cross_entropy", metrics=["accuracy"])


# --- objectives on pytree batches ------------------------------------------------------------------

@pytest.mark.parametrize("placement", [dict(fused=True), dict(fused=False), dict(placement="host")],
                         ids=["fused", "per-step", "host"])
def test_a_dict_batch_with_a_hand_written_objective_trains_like_the_x_y_path(loss_fit, placement):
    x, y = classification()
    state, history = fit(classifier(), {"x": x, "y": y}, objective=dict_cross_entropy, input_shape=(FEATURES,),
                         metrics=["accuracy"], **placement)
    expected, expected_history = loss_fit
    chex.assert_trees_all_close(state.params, expected.params, **TOLERANCE)
    assert int(state.step) == int(expected.step) == EPOCHS * (N // BATCH_SIZE)
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(history[name], expected_history[name], **TOLERANCE, err_msg=name)


def test_the_supervised_objective_is_exactly_the_loss_path(loss_fit):
    x, y = classification()
    state, history = fit(classifier(), (x, y), val=classification(20, seed=1),
                         objective=supervised("cross_entropy"), metrics=["accuracy"])
    expected, expected_history = loss_fit
    chex.assert_trees_all_equal(state.params, expected.params)
    rows, expected_rows = without_timing(history), without_timing(expected_history)
    assert [set(row) for row in rows] == [set(row) for row in expected_rows]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    for row, expected_row in zip(rows, expected_rows):
        train = {k: v for k, v in row.items() if not k.startswith("val_")}
        assert train == {k: v for k, v in expected_row.items() if not k.startswith("val_")}
        # val: the objective's evaluator sums batch means times sizes, the loss path sums
        # per-example losses: the same mean, summed in another order.
        for name in ("val_loss", "val_accuracy"):
            np.testing.assert_allclose(row[name], expected_row[name], rtol=1e-6, err_msg=name)


def test_an_objectives_logs_are_averaged_per_epoch_in_train_and_val():
    x, y = classification()
    x_val, y_val = classification(20, seed=1)
    model = classifier()
    state, history = fit(model, {"x": x, "y": y}, val={"x": x_val, "y": y_val}, objective=with_first_feature,
                         input_shape=(FEATURES,), eval_batch_size=8)  # val batches of 8, 8, 4
    for epoch, row in enumerate(history):
        rows = np.asarray(batch_indices(data_key(state), epoch, N, BATCH_SIZE))  # equal batches: mean of means
        np.testing.assert_allclose(row["first_feature"], np.mean(x[rows.ravel(), 0]), rtol=1e-6)
    # weighted by batch size: the mean over the 20 val examples, not of the 3 batch means
    np.testing.assert_allclose(history["val_first_feature"], [np.mean(x_val[:, 0])] * EPOCHS, rtol=1e-6)
    assert np.mean(x_val[:, 0]) != pytest.approx(np.mean([x_val[:8, 0].mean(), x_val[8:16, 0].mean(),
                                                          x_val[16:, 0].mean()]), rel=1e-3)
    logits = jax.vmap(lambda x_i: model.apply(state.params, state.model_state, x_i, train=False)[0])(x_val)
    val_loss = np.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y_val))
    np.testing.assert_allclose(history["val_loss"][-1], val_loss, rtol=1e-5)  # eval mode: dropout off


# --- unsupervised: a bare array batch ---------------------------------------------------------------

def autoencoder_forward(params, x):
    """serial(Dense(3), Tanh(), Dense(6)) by hand: x (batch, 6) -> (batch, 6)."""
    hidden = jnp.tanh(x @ params["dense_0"]["w"] + params["dense_0"]["b"])
    return hidden @ params["dense_2"]["w"] + params["dense_2"]["b"]


def test_reconstruction_on_a_bare_array_equals_a_hand_written_scan_over_batch_indices():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(48, 6)), jnp.float32)  # gathered by traced rows
    model, optimizer, epochs, batch_size = nn.serial(nn.Dense(3), nn.Tanh(), nn.Dense(6)), optax.adam(1e-2), 4, 16
    state, history = fdl.fit(model, x, objective=reconstruction("mse"), optimizer=optimizer, epochs=epochs,
                             batch_size=batch_size, seed=SEED, verbose=0)

    start = fdl.init_train_state(model, (6,), optimizer, SEED)  # fit's initial params, its data key

    @jax.jit
    def hand_epoch(params, opt_state, indices):
        def body(carry, rows):
            params, opt_state = carry
            batch = take(x, rows)
            mse = lambda p: jnp.mean((autoencoder_forward(p, batch) - batch) ** 2)  # noqa: E731
            loss, grads = jax.value_and_grad(mse)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(body, (params, opt_state), indices)

    params, opt_state, epoch_losses = start.params, start.opt_state, []
    for epoch in range(epochs):
        indices = batch_indices(data_key(start), epoch, x.shape[0], batch_size)  # drawn on the host
        (params, opt_state), losses = hand_epoch(params, opt_state, indices)
        epoch_losses.append(float(jnp.mean(losses)))
    chex.assert_trees_all_close(state.params, params, **TOLERANCE)
    np.testing.assert_allclose(history["loss"], epoch_losses, rtol=1e-5)
    np.testing.assert_allclose(history["reconstruction"], history["loss"], rtol=1e-6)
    assert history["loss"][-1] < 0.9 * history["loss"][0]


# --- custom steps ------------------------------------------------------------------------------------

REGRESSORS = {"a": nn.serial(nn.Dense(8), nn.Dropout(0.25), nn.Tanh(), nn.Dense(1)), "b": nn.Dense(1)}
OPTIMIZERS = {"a": optax.adam(1e-2), "b": optax.sgd(0.1)}


def regression(n=N, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return {"x": x, "y": (np.sin(x[:, 0]) + 0.5 * x[:, 1]).astype(np.float32)}


def two_regressors_step(state, batch):
    """Model a fits y (dropout keyed by the step fdl counts); model b fits a's residual; two optimizers."""
    key = jax.random.fold_in(state.rng, state.step)
    x, y = batch["x"], batch["y"]

    def loss_a(params):
        prediction, _ = fdl.batched(REGRESSORS["a"])(params, state.model_state["a"], x, key=key, train=True)
        return jnp.mean((prediction[:, 0] - y) ** 2), prediction[:, 0]

    (value_a, prediction_a), grads_a = jax.value_and_grad(loss_a, has_aux=True)(state.params["a"])
    residual = y - jax.lax.stop_gradient(prediction_a)
    value_b, grads_b = jax.value_and_grad(
        lambda p: jnp.mean((x @ p["w"][:, 0] + p["b"][0] - residual) ** 2))(state.params["b"])
    params, opt_state = {}, {}
    for name, grads in (("a", grads_a), ("b", grads_b)):
        updates, opt_state[name] = OPTIMIZERS[name].update(grads, state.opt_state[name], state.params[name])
        params[name] = optax.apply_updates(state.params[name], updates)
    logs = {"loss": value_a + value_b, "loss_a": value_a, "loss_b": value_b}
    return state.replace(params=params, opt_state=opt_state), logs


def two_regressors_state():
    return fdl.init_train_state(REGRESSORS, {"a": (4,), "b": (4,)}, OPTIMIZERS, SEED)


def test_a_custom_step_over_two_models_equals_calling_it_by_hand_over_host_batches():
    data, start = regression(), two_regressors_state()
    state, history = fdl.fit(None, data, step=two_regressors_step, state=start, epochs=1,
                             batch_size=BATCH_SIZE, verbose=0)

    step, expected, losses = jax.jit(two_regressors_step), start, []
    for batch in host_batches(start, data, 0, BATCH_SIZE):
        expected, logs = step(expected, batch)
        expected = expected.replace(step=expected.step + 1)  # what fdl does after the user's step
        losses.append(logs)
    chex.assert_trees_all_close(state.params, expected.params, **TOLERANCE)
    chex.assert_trees_all_close(state.opt_state, expected.opt_state, **TOLERANCE)
    assert int(state.step) == N // BATCH_SIZE and int(start.step) == 0
    for name in ("loss", "loss_a", "loss_b"):
        np.testing.assert_allclose(history[name], [np.mean([logs[name] for logs in losses])], rtol=1e-6)


def test_a_custom_step_without_a_loss_is_a_one_line_error():
    def no_loss(state, batch):
        return state, {"mse": jnp.mean(batch["y"] ** 2)}

    with pytest.raises(ValueError, match=r"step: a custom step must return \(state, logs\) with logs\['loss'\]") \
            as error:
        fdl.fit(None, regression(), step=no_loss, state=two_regressors_state(), batch_size=BATCH_SIZE, verbose=0)
    assert_one_line(error)


def test_val_with_a_custom_step_and_no_objective_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"val: a custom step has no validation objective — pass objective=") \
            as error:
        fdl.fit(None, regression(), val=regression(10), step=two_regressors_step, state=two_regressors_state(),
                batch_size=BATCH_SIZE, verbose=0)
    assert_one_line(error)


# --- errors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("train, val, message", [
    ({"tokens": np.zeros((100, 5), np.float32), "mask": np.ones((99, 5), bool)}, None,
     r"train\['tokens'\] has 100 examples but train\['mask'\] has 99 — give every array one row per example"),
    ((np.zeros((100, 5), np.float32), {"y": np.zeros(100, np.int32), "w": np.ones(98, np.float32)}), None,
     r"train\[1\]\['w'\] has 98 examples but train\[0\] has 100"),
    ({"x": np.zeros((12, 5), np.float32), "y": np.zeros(12, np.int32)},
     {"x": np.zeros((7, 5), np.float32), "y": np.zeros(6, np.int32)},
     r"val\['y'\] has 6 examples but val\['x'\] has 7"),
], ids=["dict", "nested", "val"])
def test_leaves_of_different_lengths_name_the_leaf(train, val, message):
    with pytest.raises(ValueError, match=message) as error:
        fdl.fit(classifier(), train, val=val, objective=dict_cross_entropy, input_shape=(FEATURES,),
                batch_size=4, verbose=0)
    assert_one_line(error)


def test_per_example_gradients_with_an_objective_are_refused():
    x, y = classification()
    with pytest.raises(ValueError, match=r"per_example=True needs a per-example loss \(loss=\.\.\.\), not an "
                                         r"objective") as error:
        fdl.fit(classifier(), {"x": x, "y": y}, objective=dict_cross_entropy, input_shape=(FEATURES,),
                per_example=True, verbose=0)
    assert_one_line(error)


def test_logs_may_not_take_the_engines_own_names():
    def step(state, batch):
        new_state, logs = two_regressors_step(state, batch)
        return new_state, {**logs, "finite": jnp.float32(0)}

    with pytest.raises(ValueError, match=r"step: logs\['finite'\] — fdl logs finite, step"):
        fdl.fit(None, regression(), step=step, state=two_regressors_state(), batch_size=8, verbose=0)


def test_a_custom_step_refuses_augment_and_a_missing_state():
    with pytest.raises(ValueError, match="^step: a custom step does the whole update"):
        fdl.fit(None, regression(), step=two_regressors_step, state=two_regressors_state(), batch_size=8,
                augment=lambda key, x: x, verbose=0)
    with pytest.raises(ValueError, match=r"^state: fit\(None, \.\.\., step=\.\.\.\) needs state="):
        fdl.fit(None, regression(), step=two_regressors_step, batch_size=8, verbose=0)
