"""The epoch drivers against a hand-written loop over `batch_indices`; replay; summaries; train metrics."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fdl
from fdl import nn
from fdl.data.order import batch_indices
from fdl.metrics import get_metric
from fdl.objectives import PREDICTIONS
from fdl.train.epoch import (
    HostEpoch, StepEpoch, epoch_summary, host_batches, make_replay_epoch, make_train_epoch,
    replay_host_epoch,
)
from fdl.train.state import data_key
from fdl.train.step import make_train_step

N, BATCH_SIZE, EPOCH = 26, 4, 1  # 6 batches a epoch, 2 examples dropped; epoch 1 so the epoch number counts
# The reference loop jits the bare step on its own, outside any scan: XLA may fuse its float32
# arithmetic differently, so it agrees to a few ulps. (The engine's own paths — fused, stepped,
# host, in chunks — agree bit for bit: tests/train/test_chunks.py.)
RTOL, ATOL = 1e-5, 1e-6


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 5)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.3 * rng.normal(size=(N, 3)), axis=1).astype(np.int32)
    return x, y


METRICS = (get_metric("accuracy", num_classes=3), get_metric("top_2_accuracy", num_classes=3))


class Engine:
    """One model, step and start state, with each driver compiled once for the whole module."""

    def __init__(self):
        model = nn.serial(nn.Dense(4), nn.Relu(), nn.Dropout(0.2), nn.Dense(3))
        optimizer = fdl.optim.make_optimizer("sgd", learning_rate=0.1)  # injects the learning rate
        self.step = make_train_step(model, fdl.losses.cross_entropy, optimizer)
        self.start = fdl.init_train_state(model, (5,), optimizer, 0)
        self.jitted_step = jax.jit(self.step)
        self.fused = jax.jit(make_train_epoch(self.step, BATCH_SIZE, METRICS))
        self.replay = jax.jit(make_replay_epoch(self.step))

    def rows(self, epoch=EPOCH):
        """The epoch's batch indices, drawn on the host from the start state's data key."""
        return batch_indices(data_key(self.start), epoch, N, BATCH_SIZE)

    def hand_loop(self, x, y, epoch=EPOCH, stop=None):
        """The reference: one jitted step per row of `batch_indices`, in order, up to batch `stop`."""
        state, losses, outputs, targets = self.start, [], [], []
        for i, batch in enumerate(np.asarray(batch_indices(data_key(state), epoch, N, BATCH_SIZE))):
            if i == stop:
                break
            state, logs = self.jitted_step(state, (x[batch], y[batch]))
            losses.append(logs["loss"]), outputs.append(logs[PREDICTIONS][0]), targets.append(y[batch])
        return state, np.array(losses), np.concatenate(outputs), np.concatenate(targets)


@pytest.fixture(scope="module")
def engine():
    return Engine()


@pytest.fixture(scope="module")
def fused_epoch(engine):
    """(state, logs, train metrics) of the fused epoch EPOCH on data()."""
    return engine.fused(engine.start, data(), engine.rows())


@pytest.fixture(scope="module")
def reference(engine):
    """(state, losses, outputs, targets) of the hand-written loop over epoch EPOCH on data()."""
    return engine.hand_loop(*data())


def assert_trees_close(actual, expected):
    chex.assert_trees_all_equal_structs(actual, expected)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), actual, expected)


def test_fused_epoch_equals_a_python_loop_over_batch_indices(fused_epoch, reference):
    state, logs, _ = fused_epoch
    expected, expected_losses, _, _ = reference
    assert set(logs) == {"loss"}  # the predictions feed the metrics, they are not logged per step
    chex.assert_shape(logs["loss"], (N // BATCH_SIZE,))
    np.testing.assert_allclose(logs["loss"], expected_losses, rtol=RTOL)
    assert_trees_close(state.params, expected.params)
    assert_trees_close(state.opt_state, expected.opt_state)
    assert int(state.step) == N // BATCH_SIZE


def test_another_epoch_number_takes_another_order(engine, fused_epoch):
    x, y = data()
    _, logs_2, _ = engine.fused(engine.start, (x, y), engine.rows(2))
    np.testing.assert_allclose(logs_2["loss"], engine.hand_loop(x, y, epoch=2)[1], rtol=RTOL)
    assert not np.allclose(fused_epoch[1]["loss"], logs_2["loss"])


def test_step_and_host_epochs_give_the_fused_epochs_params_and_spare_the_start_state(engine, fused_epoch):
    x, y = data()
    start, step = engine.start, engine.step
    kept = jax.tree.map(np.array, start)
    fused, fused_logs, _ = fused_epoch
    stepped, stepped_logs, stepped_metrics = StepEpoch(step)(
        start, (jnp.asarray(x), jnp.asarray(y)), engine.rows())
    hosted, hosted_logs, hosted_metrics = HostEpoch(step)(
        start, host_batches(start, (x, y), EPOCH, BATCH_SIZE), N // BATCH_SIZE)
    for state, logs in ((stepped, stepped_logs), (hosted, hosted_logs)):
        assert_trees_close(state.params, fused.params)
        assert set(logs) == {"loss"}
        np.testing.assert_allclose(logs["loss"], fused_logs["loss"], rtol=RTOL)
        assert int(state.step) == int(fused.step)
    assert stepped_metrics == hosted_metrics == {}
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, start), kept)  # donation worked on a copy


def test_host_batches_are_the_fused_epochs_batches(engine):
    x, y = data()
    batches = list(host_batches(engine.start, (x, y), EPOCH, BATCH_SIZE))
    indices = np.asarray(batch_indices(data_key(engine.start), EPOCH, N, BATCH_SIZE))
    assert len(batches) == N // BATCH_SIZE
    for (xb, yb), batch in zip(batches, indices):
        np.testing.assert_array_equal(xb, x[batch])
        np.testing.assert_array_equal(yb, y[batch])


def poisoned(start, x, bad_batches):
    """x with a NaN in one example of each of `bad_batches` (batch numbers of epoch EPOCH)."""
    x = x.copy()
    indices = np.asarray(batch_indices(data_key(start), EPOCH, N, BATCH_SIZE))
    for batch in bad_batches:
        x[indices[batch][1], 2] = np.nan
    return x


def test_replay_finds_the_first_failing_step_and_keeps_the_state_before_it(engine):
    x, y = data()
    x = poisoned(engine.start, x, bad_batches=[3, 5])
    state, failed = engine.replay(engine.start, (x, y), engine.rows())
    assert int(failed) == 3
    expected, _, _, _ = engine.hand_loop(x, y, stop=3)
    assert int(state.step) == 3
    assert_trees_close(state.params, expected.params)

    host_state, host_failed = replay_host_epoch(engine.step, engine.start,
                                                host_batches(engine.start, (x, y), EPOCH, BATCH_SIZE))
    assert host_failed == 3
    assert_trees_close(host_state.params, expected.params)


def test_replay_of_a_finite_epoch_reports_no_failure_and_trains_like_the_fused_epoch(engine, fused_epoch):
    state, failed = engine.replay(engine.start, data(), engine.rows())
    assert int(failed) == -1
    assert_trees_close(state.params, fused_epoch[0].params)


def test_epoch_summary_with_an_injected_learning_rate(fused_epoch):
    state, logs, _ = fused_epoch
    summary = epoch_summary(state, logs, {"accuracy": jnp.float32(0.75)})
    assert set(summary) == {"finite", "step", "loss", "learning_rate", "accuracy"}
    assert bool(summary["finite"]) and int(summary["step"]) == N // BATCH_SIZE
    np.testing.assert_allclose(summary["loss"], np.mean(np.asarray(logs["loss"])), rtol=1e-6)
    np.testing.assert_allclose(summary["learning_rate"], 0.1, rtol=1e-6)
    assert float(summary["accuracy"]) == 0.75


def test_epoch_summary_with_a_plain_optax_optimizer_and_non_finite_values():
    state = fdl.init_train_state(nn.Dense(2), (3,), optax.sgd(0.1), 0)
    summary = epoch_summary(state, {"loss": jnp.array([1.0, 3.0])}, {})
    assert set(summary) == {"finite", "step", "loss"}  # nothing injected: no learning rate to log
    assert bool(summary["finite"]) and float(summary["loss"]) == 2.0 and int(summary["step"]) == 0
    assert not bool(epoch_summary(state, {"loss": jnp.array([1.0, jnp.nan])}, {})["finite"])
    inf_params = state.replace(params={"w": state.params["w"].at[0, 0].set(jnp.inf), "b": state.params["b"]})
    assert not bool(epoch_summary(inf_params, {"loss": jnp.array([1.0, 3.0])}, {})["finite"])


def test_train_metrics_of_the_fused_epoch_match_the_train_outputs_of_each_step(fused_epoch, reference):
    """Over the 24 examples trained on (not the 2 dropped), from the train-mode outputs of each step."""
    _, _, metrics = fused_epoch
    _, _, outputs, targets = reference
    assert outputs.shape == (N // BATCH_SIZE * BATCH_SIZE, 3)
    top_2 = np.argsort(-outputs, axis=1, kind="stable")[:, :2]
    expected = {"accuracy": np.mean(top_2[:, 0] == targets),
                METRICS[1].name: np.mean(np.any(top_2 == targets[:, None], axis=1))}
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-6, err_msg=name)
