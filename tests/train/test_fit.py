"""fit/evaluate/predict against closed forms and references; determinism; NaN guard; recompiles."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fdl
from fdl import nn
from fdl.data.order import batch_indices
from fdl.train.state import data_key


def linear_data(n=256, features=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    w = np.array([[1.5], [-2.0], [0.5]], np.float32)[:features]
    y = (x @ w + 0.3 + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def test_linear_regression_reaches_least_squares():
    x, y = linear_data()
    model = nn.Dense(1)
    state, history = fdl.fit(model, (x, y), loss="mse", optimizer={"name": "adam", "learning_rate": 0.05},
                             epochs=60, batch_size=64, verbose=0)
    design = np.hstack([x, np.ones((x.shape[0], 1), np.float32)])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose(state.params["w"], solution[:3], atol=2e-2)
    np.testing.assert_allclose(state.params["b"], solution[3], atol=2e-2)
    assert history["loss"][-1] < history["loss"][0]


def test_logistic_regression_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0]) + 0.8 * rng.normal(size=200) > 0).astype(np.int32)
    reference = sklearn.LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x, y)
    state, _ = fdl.fit(nn.Dense(1), (x, y[:, None].astype(np.float32)), loss="binary_cross_entropy",
                       optimizer={"name": "adam", "learning_rate": 0.05}, epochs=300,
                       batch_size=200, verbose=0)
    np.testing.assert_allclose(np.asarray(state.params["w"])[:, 0], reference.coef_[0], rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(np.asarray(state.params["b"]), reference.intercept_, rtol=2e-2, atol=2e-2)


def mlp():
    return nn.serial(nn.Dense(16), nn.Relu(), nn.Dropout(0.1), nn.Dense(3))


def class_data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.3 * rng.normal(size=(n, 3)), axis=1).astype(np.int32)
    return x, y


def strip_times(history):
    return [{k: v for k, v in row.items() if k not in ("time_s", "steps_per_s")} for row in history]


def test_same_seed_gives_identical_history_and_other_seed_differs():
    x, y = class_data()
    runs = [fdl.fit(mlp(), (x, y), val=(x[:50], y[:50]), metrics=["accuracy"], epochs=3,
                    batch_size=32, seed=seed, verbose=0) for seed in (7, 7, 8)]
    assert strip_times(runs[0][1]) == strip_times(runs[1][1])
    assert strip_times(runs[0][1]) != strip_times(runs[2][1])


def test_fused_and_per_step_paths_give_the_same_parameters():
    x, y = class_data()
    common = dict(epochs=2, batch_size=50, seed=3, verbose=0, optimizer="sgd")
    fused, _ = fdl.fit(mlp(), (x, y), fused=True, **common)
    stepped, _ = fdl.fit(mlp(), (x, y), fused=False, **common)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 fused.params, stepped.params)
    assert int(fused.step) == int(stepped.step) == 2 * (240 // 50)


def test_a_second_epoch_compiles_nothing():
    traces = []

    def counting_loss(output, target):
        traces.append(1)
        return fdl.losses.cross_entropy(output, target)

    x, y = class_data()
    for epochs in (1, 4):
        traces.clear()
        fdl.fit(mlp(), (x, y), val=(x[:40], y[:40]), loss=counting_loss, epochs=epochs,
                batch_size=40, verbose=0)
        counts = len(traces)
    assert counts == 2  # one trace for the train epoch, one for the validation step


def test_nan_guard_stops_with_the_last_finite_state():
    x, y = class_data(n=100)
    poisoned = 37
    y_float = y.astype(np.float32)
    y_float[poisoned] = -1.0  # data checks pass (a user's loss); the loss of example 37 is NaN

    def loss(output, target):
        return fdl.losses.cross_entropy(output, jnp.maximum(target, 0).astype(jnp.int32)) + \
            0.0 * jnp.log1p(target)

    common = dict(loss=loss, optimizer="sgd", batch_size=10, seed=0, verbose=0)
    state0 = fdl.init_train_state(mlp(), (5,), optax.sgd(1e-3), 0)
    order = np.asarray(batch_indices(data_key(state0), 0, 100, 10))
    bad_batch = int(np.argmax((order == poisoned).any(axis=1)))
    with pytest.raises(fdl.NonFiniteLossError, match=f"epoch 1, step {bad_batch + 1} ") as error:
        fdl.fit(mlp(), (x, y_float), epochs=3, **common)
    good_state = error.value.state
    assert int(good_state.step) == bad_batch
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(good_state.params))
    if bad_batch:  # the same steps on clean data reach the same state
        reference = jax.jit(fdl.train.make_train_step(mlp(), fdl.losses.cross_entropy,
                                                      fdl.optim.make_optimizer("sgd")))  # one compile, not op by op
        state = fdl.init_train_state(mlp(), (5,), fdl.optim.make_optimizer("sgd"), 0)
        for i in range(bad_batch):
            state, _ = reference(state, (x[order[i]], y[order[i]]))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     good_state.params, state.params)


def test_evaluate_and_predict_any_size_without_recompiling():
    traces = []

    def counting(x):
        traces.append(1)
        return x

    model = nn.serial(nn.Dense(3), nn.activations.elementwise("Counting", counting))
    x, y = class_data(n=1100)
    state = fdl.init_train_state(model, (5,), optax.sgd(0.1), 0)
    evaluator = fdl.train.Evaluator(model)  # owns one compiled program for every split size
    outputs = [evaluator.predict(state.params, state.model_state, x[:n]) for n in (3, 700, 1100)]
    assert len(traces) == 1
    np.testing.assert_allclose(fdl.predict(model, state, x[:700]), outputs[1], rtol=1e-6)
    assert [o.shape for o in outputs] == [(3, 3), (700, 3), (1100, 3)]
    np.testing.assert_allclose(outputs[2][:700], outputs[1], rtol=1e-6)
    scores = fdl.evaluate(model, state, (x, y), metrics=["accuracy"])
    logits = x @ np.asarray(state.params["dense_0"]["w"]) + np.asarray(state.params["dense_0"]["b"])
    np.testing.assert_allclose(scores["accuracy"], np.mean(logits.argmax(1) == y), atol=1e-6)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(scores["loss"], -log_probs[np.arange(1100), y].mean(), rtol=1e-5)


def test_per_example_gradients_equal_single_example_gradients():
    x, y = class_data(n=4)
    model = nn.serial(nn.Dense(4), nn.Tanh(), nn.Dense(3))
    state = fdl.init_train_state(model, (5,), optax.sgd(0.1), 0)
    key = jax.random.key(0)
    grads = fdl.train.per_example_grads(model, fdl.losses.cross_entropy, state.params,
                                        state.model_state, x, y, key)
    for i in range(4):
        single = jax.grad(lambda p: fdl.losses.cross_entropy(
            fdl.batched(model)(p, state.model_state, x[i:i + 1])[0][0], y[i]))(state.params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), grads, single)


def test_bad_batch_size_is_a_clear_error():
    x, y = class_data(n=20)
    with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, 20\]"):
        fdl.fit(mlp(), (x, y), batch_size=64, verbose=0)


def test_host_placement_and_npy_stream_train_like_the_device(tmp_path):
    x, y = class_data()
    common = dict(epochs=2, batch_size=40, seed=5, verbose=0)
    on_device, _ = fdl.fit(mlp(), (x, y), placement="device", **common)
    on_host, _ = fdl.fit(mlp(), (x, y), placement="host", **common)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    stream = fdl.data.NpyStream(tmp_path / "x.npy", tmp_path / "y.npy")
    streamed, _ = fdl.fit(mlp(), stream, **common)
    for other in (on_host, streamed):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     on_device.params, other.params)


def test_nan_guard_on_the_host_path():
    x, y = class_data(n=100)
    y = y.astype(np.float32)
    y[11] = -1.0

    def loss(output, target):
        return fdl.losses.cross_entropy(output, jnp.maximum(target, 0).astype(jnp.int32)) + \
            0.0 * jnp.log1p(target)

    with pytest.raises(fdl.NonFiniteLossError, match="epoch 1") as error:
        fdl.fit(mlp(), (x, y), loss=loss, epochs=2, batch_size=10, placement="host", verbose=0)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(error.value.state.params))


def test_dp_sgd_through_optax_clips_each_example():
    """per_example=True feeds optax's DP aggregate; with zero noise it averages clipped grads."""
    x, y = class_data(n=40)
    model = nn.serial(nn.Dense(3))
    clip = 1e-3
    tx = optax.chain(optax.contrib.differentially_private_aggregate(clip, 0.0, key=jax.random.key(0)), optax.sgd(1.0))
    state, _ = fdl.fit(model, (x, y), optimizer=tx, epochs=1, batch_size=40, per_example=True, verbose=0)
    start = fdl.init_train_state(model, (5,), tx, 0)
    grads = fdl.train.per_example_grads(model, fdl.losses.cross_entropy, start.params, start.model_state, x, y,
                                        jax.random.key(0))
    flat = np.concatenate([np.asarray(g).reshape(40, -1) for g in jax.tree.leaves(grads)], axis=1)
    scale = np.minimum(1.0, clip / np.linalg.norm(flat, axis=1))
    expected = jax.tree.map(lambda p, g: p - np.mean(np.asarray(g) * scale.reshape(-1, *[1] * (g.ndim - 1)), 0),
                            start.params, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), state.params, expected)


def test_metrics_on_a_model_with_several_outputs_are_refused():
    x = np.random.default_rng(0).uniform(size=(20, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"metrics \[accuracy\]: this model returns 3 outputs"):
        fdl.fit(nn.models.vae(latent=2, hidden=[4]), (x, x), loss="elbo_bernoulli", metrics=["accuracy"],
                batch_size=10, verbose=0)


def test_roc_auc_evaluation_shares_one_program_across_split_sizes():
    traces = []

    def counting(x):
        traces.append(1)
        return x

    model = nn.serial(nn.Dense(1), nn.activations.elementwise("Counting", counting))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 3)).astype(np.float32), (rng.uniform(size=(400, 1)) > 0.5).astype(np.float32)
    state = fdl.init_train_state(model, (3,), optax.sgd(0.1), 0)
    evaluator = fdl.train.Evaluator(model, loss=fdl.losses.get_loss("binary_cross_entropy"),
                                    metrics=fdl.metrics.get_metrics(["roc_auc"], None))
    for n in (300, 400):
        evaluator.evaluate(state.params, state.model_state, x[:n], y[:n])
    assert len(traces) == 1


def test_nothing_compiles_after_the_first_epoch(compiles):
    """fit owns its programs: the epoch and the validation compile once, not once per epoch."""
    x, y = class_data(n=100)
    after_epoch = []
    with compiles.counting() as compiled:
        fdl.fit(mlp(), (x[:80], y[:80]), val=(x[80:], y[80:]), epochs=4, batch_size=20, verbose=0,
                metrics=["accuracy"], callbacks=[lambda epoch, logs: after_epoch.append(compiles.count)])
    assert len(compiled) > 0 and after_epoch[1:] == [after_epoch[0]] * 3


def test_three_evaluations_with_one_evaluator_compile_one_program(compiles):
    x, y = class_data(n=100)
    state = fdl.init_train_state(mlp(), (5,), optax.sgd(0.1), 0)
    evaluator = fdl.train.Evaluator(mlp(), loss=fdl.losses.get_loss("huber", delta=2.0),
                                    metrics=fdl.metrics.get_metrics(["mse"], None))
    with compiles.counting() as compiled:
        scores = [evaluator.evaluate(state.params, state.model_state, x, np.eye(3, dtype=np.float32)[y])
                  for _ in range(3)]
    assert len(compiled) == 2  # the batch step and the final reduction, once each
    assert scores[0] == scores[1] == scores[2]


def test_every_path_logs_the_same_train_metrics():
    """Fused, per-step and host-streamed epochs log the same keys and the same exact metrics."""
    x, y = class_data(n=100)
    common = dict(epochs=2, batch_size=20, seed=1, verbose=0, metrics=["accuracy", "f1"])
    runs = [fdl.fit(mlp(), (x, y), **common)[1],
            fdl.fit(mlp(), (x, y), fused=False, **common)[1],
            fdl.fit(mlp(), (x, y), placement="host", **common)[1]]
    keys = [sorted(set(h[0]) - {"time_s", "steps_per_s"}) for h in runs]
    assert keys[0] == keys[1] == keys[2] and {"accuracy", "f1"} <= set(keys[0])
    for history in runs[1:]:
        for metric in ("loss", "accuracy", "f1"):
            np.testing.assert_allclose(history[metric], runs[0][metric], rtol=1e-5)
