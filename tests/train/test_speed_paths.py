"""What makes fit fast must not change its numbers: staged batches, queued epochs, one program each.

- the staged feed (batches cut on the host) and the gather feed give the same parameters;
- an epoch queued ahead is dropped when a callback changes the state or stops training;
- a 2-epoch fit with validation builds 3 programs, and a second fit of the same model
  compiles none (the compilation cache), in this process and in a new one.
"""
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax

import fdl
from fdl import nn
from fdl.train.callbacks import Callback
from fdl.train.placement import device_epochs
from fdl.train.step import make_train_step


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.3 * rng.normal(size=(n, 3)), axis=1).astype(np.int32)
    return x, y


def mlp():
    return nn.serial(nn.Dense(8), nn.Relu(), nn.Dropout(0.1), nn.Dense(3))


def test_staged_and_gather_feeds_give_the_same_parameters_and_logs():
    x, y = data()
    model, tx = mlp(), optax.adam(1e-2)
    step = make_train_step(model, fdl.losses.get_loss("cross_entropy"), tx)
    state = fdl.init_train_state(model, (5,), tx, 3)
    results = {}
    for feed in ("gather", "staged"):
        epochs = device_epochs(step, 16, (), True, (x, y), feed=feed)
        current, losses = state, []
        for epoch in range(3):
            current, summary = epochs.run(current, epoch)
            losses.append(float(summary["loss"]))
        results[feed] = (jax.device_get(current.params), losses)
    jax.tree.map(np.testing.assert_array_equal, results["gather"][0], results["staged"][0])
    assert results["gather"][1] == results["staged"][1]


class SetLearningRate(Callback):
    """Sets the learning rate to `value` after epoch `at` (the queued next epoch must be dropped)."""

    def __init__(self, at, value):
        self.at, self.value, self.params = at, value, {}

    def on_epoch_end(self, run, epoch, logs):
        self.params[epoch] = jax.device_get(run.state.params)
        if epoch == self.at:
            run.set_hyperparameter("learning_rate", self.value)


def test_an_epoch_queued_ahead_is_dropped_when_a_callback_changes_the_state():
    """Learning rate 0 from epoch 3 on: with SGD the parameters stay those of epoch 2 exactly."""
    x, y = data()
    watch = SetLearningRate(at=2, value=0.0)
    state, history = fdl.fit(nn.Dense(3), (x, y), optimizer={"name": "sgd", "learning_rate": 0.5}, epochs=4,
                             batch_size=20, verbose=0, callbacks=[watch])
    assert not np.array_equal(watch.params[1]["w"], watch.params[2]["w"])  # it did train before
    for epoch in (3, 4):
        jax.tree.map(np.testing.assert_array_equal, watch.params[epoch], watch.params[2])
    assert history["learning_rate"] == [0.5, 0.5, 0.0, 0.0] and int(state.step) == 4 * 6


class StopAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, run, epoch, logs):
        run.stop_training = epoch == self.epoch


def test_stopping_drops_the_queued_epoch():
    x, y = data()
    state, history = fdl.fit(mlp(), (x, y), epochs=5, batch_size=20, verbose=0, callbacks=[StopAfter(2)])
    reference, _ = fdl.fit(mlp(), (x, y), epochs=2, batch_size=20, verbose=0)
    assert len(history) == 2 and int(state.step) == 2 * 6
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(reference.params))


def test_a_two_epoch_fit_builds_four_programs_and_a_second_fit_compiles_none(compiles):
    """init, the epoch, the validation; then all three come from the cache."""
    x, y = data()
    model = mlp()
    arguments = dict(val=(x[:40], y[:40]), epochs=2, batch_size=20, verbose=0,
                     metrics=["accuracy", "f1", "precision"])
    with compiles.counting() as built:
        _, first = fdl.fit(model, (x, y), **arguments)
    compiled_before = compiles.clock.compiled()
    with compiles.counting() as built_again:
        _, second = fdl.fit(model, (x, y), **arguments)
    assert len(built) == 3 and len(built_again) == 3
    assert compiles.clock.compiled() == compiled_before  # the second fit loaded all three
    assert [r["val_f1"] for r in first] == [r["val_f1"] for r in second]


WARM_START = textwrap.dedent("""
    import numpy as np, fdl
    from fdl import nn
    from fdl.compilation import CompileClock
    clock = CompileClock()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32); y = rng.integers(0, 3, 60).astype(np.int32)
    _, history = fdl.fit(nn.serial(nn.Dense(4), nn.Relu(), nn.Dense(3)), (x, y), val=(x, y), epochs=2,
                         batch_size=20, verbose=0)
    print(clock.programs(), clock.compiled(), round(history[-1]["val_loss"], 6))
""")


def test_a_second_process_compiles_nothing(tmp_path):
    env = {"FDL_COMPILATION_CACHE": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}  # the session's compile flags (conftest)
    runs = [subprocess.run([sys.executable, "-c", WARM_START], env=env, capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    (programs, compiled, loss), (programs_again, compiled_again, loss_again) = runs
    assert int(compiled) == int(programs) >= 3  # cold: everything compiled (and cached)
    assert int(programs_again) == int(programs) and int(compiled_again) == 0  # warm: all loaded
    assert loss == loss_again
