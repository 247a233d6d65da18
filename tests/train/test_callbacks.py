"""Callbacks' behaviour on scripted monitors; checkpoints; exact resume."""
import io
import json
import os

import jax
import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.train import callbacks as cb


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return x, y


def model():
    return nn.serial(nn.Dense(8), nn.Relu(), nn.Dense(2))


def script(values, key="score"):
    """A callable that writes scripted values into the logs before later callbacks read them."""
    return lambda epoch, logs: logs.__setitem__(key, values[epoch - 1])


class Snapshots(cb.Callback):
    def __init__(self):
        self.states = {}

    def on_epoch_end(self, run, epoch, logs):
        self.states[epoch] = jax.tree.map(np.asarray, run.state.params)


def test_early_stopping_stops_after_patience_and_restores_the_best(data):
    snapshots = Snapshots()
    stopper = cb.EarlyStopping("score", patience=2, mode="min")
    state, history = fdl.fit(model(), data, epochs=10, batch_size=16, verbose=0, optimizer="sgd",
                             callbacks=[script([5, 3, 4, 1, 2, 2, 2, 2, 2, 2]), snapshots, stopper])
    assert len(history) == 6 and stopper.best_epoch == 4 and stopper.stopped_epoch == 6
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), snapshots.states[4])


def test_reduce_lr_on_plateau_multiplies_the_learning_rate(data):
    plateau = cb.ReduceLROnPlateau("score", factor=0.5, patience=2, mode="max")
    _, history = fdl.fit(model(), data, epochs=6, batch_size=16, verbose=0,
                         optimizer={"name": "sgd", "learning_rate": 0.1},
                         callbacks=[script([1, 1, 1, 1, 1, 1]), plateau])
    np.testing.assert_allclose(history["learning_rate"], [0.1, 0.1, 0.1, 0.05, 0.05, 0.025], rtol=1e-6)


def test_monitor_that_is_not_logged_is_named(data):
    with pytest.raises(KeyError, match="EarlyStopping: monitor 'val_acc' is not logged"):
        fdl.fit(model(), data, epochs=1, batch_size=16, verbose=0,
                callbacks=[cb.EarlyStopping("val_acc")])


def newest(directory, *names):
    template = fdl.init_train_state(model(), (4,), fdl.optim.make_optimizer("adam"), 0)
    return cb_checkpoints(directory).newest({name: template for name in names})


def cb_checkpoints(directory):
    from fdl.train.checkpoint import RunCheckpoints
    return RunCheckpoints(directory)


def test_model_checkpoint_keeps_the_last_and_the_best_state_with_the_run(data, tmp_path):
    snapshots = Snapshots()
    state, _ = fdl.fit(model(), data, epochs=3, batch_size=16, verbose=0,
                       callbacks=[script([0.1, 0.9, 0.5]), snapshots,
                                  cb.ModelCheckpoint(tmp_path, monitor="score", mode="max", keep=2)])
    step, items, metadata = newest(tmp_path, "state", "best")
    assert step == 3 * 4 and sorted(os.listdir(tmp_path)) == ["12", "8"]  # keep=2 of every epoch's
    assert metadata["epoch"] == 3 and [row["score"] for row in metadata["history"]] == [0.1, 0.9, 0.5]
    assert [name for name, _ in metadata["callbacks"]] == ["ProgressBar", "LambdaCallback", "Snapshots",
                                                          "ModelCheckpoint"]
    assert metadata["callbacks"][-1][1] == {"best": 0.9, "best_epoch": 2}
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, items["state"]),
                 jax.tree.map(np.asarray, state))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, items["best"].params), snapshots.states[2])


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in ("time_s", "steps_per_s")} for row in history]


def resumable_callbacks(directory, resume=False):
    return [script([5, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 3]), cb.EarlyStopping("score", patience=3, mode="min"),
            cb.ReduceLROnPlateau("score", patience=1, factor=0.5, mode="min"),
            cb.ModelCheckpoint(directory, monitor="val_accuracy", resume=resume)]


RESUMABLE = dict(val=None, batch_size=16, verbose=0, seed=4, metrics=["accuracy"],
                 optimizer={"name": "adam", "learning_rate": 0.05})


def test_a_resumed_run_is_the_uninterrupted_one_callbacks_and_best_state_included(data, tmp_path):
    common = {**RESUMABLE, "val": data}
    straight, straight_history = fdl.fit(model(), data, epochs=12, callbacks=resumable_callbacks(tmp_path / "a"),
                                         **common)
    fdl.fit(model(), data, epochs=4, callbacks=resumable_callbacks(tmp_path / "b"), **common)
    callbacks = resumable_callbacks(tmp_path / "b", resume=True)
    resumed, resumed_history = fdl.fit(model(), data, epochs=12, callbacks=callbacks, **common)
    assert without_timing(resumed_history) == without_timing(straight_history)
    assert callbacks[1].stopped_epoch == len(straight_history) == 8  # stopped early: counters survived epoch 4
    assert len(set(straight_history["learning_rate"])) > 1  # and lowered the learning rate
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed),
                 jax.tree.map(np.asarray, straight))  # EarlyStopping's restored best, in both
    (_, a, _), (_, b, _) = newest(tmp_path / "a", "best"), newest(tmp_path / "b", "best")
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, a["best"]), jax.tree.map(np.asarray, b["best"]))


def test_a_folder_that_holds_checkpoints_is_refused_without_resume(data, tmp_path):
    fdl.fit(model(), data, epochs=1, batch_size=16, verbose=0, callbacks=[cb.ModelCheckpoint(tmp_path, monitor=None)])
    with pytest.raises(ValueError, match=rf"ModelCheckpoint: '{tmp_path}' already holds checkpoints — pass "
                                         "resume=True"):
        fdl.fit(model(), data, epochs=1, batch_size=16, verbose=0, callbacks=[cb.ModelCheckpoint(tmp_path)])


class CountingCheckpoint(cb.ModelCheckpoint):
    """A ModelCheckpoint that counts its calls of `run.progress_shapes` (each traces an epoch's start)."""

    traced = 0

    def on_train_begin(self, run):
        shapes = run.progress_shapes

        def counted():
            self.traced += 1
            return shapes()

        run.progress_shapes = counted
        super().on_train_begin(run)


def test_resuming_into_an_empty_folder_traces_nothing_and_a_checkpoint_traces_once(data, tmp_path):
    fresh = CountingCheckpoint(tmp_path, monitor=None, resume=True)
    fdl.fit(model(), data, epochs=1, batch_size=16, verbose=0, callbacks=[fresh])
    assert fresh.traced == 0 and fresh.resumed_step is None
    resumed = CountingCheckpoint(tmp_path, monitor=None, resume=True)
    _, history = fdl.fit(model(), data, epochs=1, batch_size=16, verbose=0, callbacks=[resumed])
    assert resumed.traced == 1 and resumed.resumed_step == 4 and [row["epoch"] for row in history] == [1]


def interrupt_at(epoch, times=1):
    import signal
    return lambda e, logs: [os.kill(os.getpid(), signal.SIGINT) for _ in range(times)] if e == epoch else None


def test_a_signal_finishes_the_epoch_writes_the_checkpoint_and_resume_continues_exactly(data, tmp_path):
    from fdl.train import TrainingInterrupted

    common = dict(batch_size=16, verbose=0, seed=2)
    straight, _ = fdl.fit(model(), data, epochs=4, **common)
    with pytest.raises(TrainingInterrupted, match="SIGINT received: training stopped after epoch 2") as caught:
        fdl.fit(model(), data, epochs=4, callbacks=[interrupt_at(2), cb.ModelCheckpoint(tmp_path, monitor=None)],
                **common)
    assert caught.value.exit_status == 130 and caught.value.epoch == 2
    assert newest(tmp_path, "state")[2]["epoch"] == 2
    resumed, history = fdl.fit(model(), data, epochs=4, callbacks=[lambda e, logs: None,
                                                                   cb.ModelCheckpoint(tmp_path, monitor=None, resume=True)],
                               **common)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed), jax.tree.map(np.asarray, straight))
    with pytest.raises(KeyboardInterrupt) as second:  # a second signal acts at once
        fdl.fit(model(), data, epochs=4, callbacks=[interrupt_at(1, times=2)], **common)
    assert type(second.value) is KeyboardInterrupt


def test_a_state_given_to_fit_continues_from_its_step(data, tmp_path):
    common = dict(batch_size=16, verbose=0, seed=4, val=data)
    straight, straight_history = fdl.fit(model(), data, epochs=4, **common)
    halfway, _ = fdl.fit(model(), data, epochs=2, **common)
    resumed, resumed_history = fdl.fit(model(), data, epochs=4, state=halfway, **common)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed),
                 jax.tree.map(np.asarray, straight))
    assert [r["epoch"] for r in resumed_history] == [3, 4]
    assert resumed_history["val_loss"] == straight_history["val_loss"][2:]


def test_history_logger_writes_one_json_line_per_epoch(data, tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    _, history = fdl.fit(model(), data, epochs=2, batch_size=16, verbose=0, metrics=["accuracy"],
                         callbacks=[cb.HistoryLogger(path)])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [dict(r) for r in history] and rows[1]["epoch"] == 2 and "accuracy" in rows[0]


def test_progress_lines_when_not_a_terminal(data):
    stream = io.StringIO()
    bar = cb.ProgressBar(verbose=2, stream=stream)
    fdl.fit(model(), data, epochs=2, batch_size=16, verbose=0, callbacks=[bar])
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"] and "loss" in lines[0]
    quiet = io.StringIO()
    fdl.fit(model(), data, epochs=1, batch_size=16, verbose=0, callbacks=[cb.ProgressBar(1, quiet)])
    assert quiet.getvalue() == ""


def test_a_non_callback_is_refused():
    with pytest.raises(TypeError, match="expected a Callback or a callable"):
        cb.as_callback(42)
