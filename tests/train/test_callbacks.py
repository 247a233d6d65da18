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


def test_model_checkpoint_writes_best_and_last_that_load_back(data, tmp_path):
    checkpoint = cb.ModelCheckpoint(best=tmp_path / "best.ckpt", last=tmp_path / "last.ckpt", monitor="score", mode="max")
    snapshots = Snapshots()
    state, _ = fdl.fit(model(), data, epochs=3, batch_size=16, verbose=0,
                       callbacks=[script([0.1, 0.9, 0.5]), snapshots, checkpoint])
    assert sorted(os.listdir(tmp_path)) == ["best.ckpt", "last.ckpt"]  # no temporary files left
    template = fdl.init_train_state(model(), (4,), fdl.optim.make_optimizer("adam"), 0)
    last, meta = fdl.load_checkpoint(tmp_path / "last.ckpt", template)
    best, best_meta = fdl.load_checkpoint(tmp_path / "best.ckpt", template)
    assert meta["epoch"] == 3 and best_meta["epoch"] == 2 and best_meta["logs"]["score"] == 0.9
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, last), jax.tree.map(np.asarray, state))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, best.params), snapshots.states[2])


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        fdl.load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not msgpack at all")
    with pytest.raises(ValueError, match="junk.ckpt.*not an fdl checkpoint"):
        fdl.load_checkpoint(tmp_path / "junk.ckpt")


def test_resume_from_a_checkpoint_continues_exactly(data, tmp_path):
    common = dict(batch_size=16, verbose=0, seed=4, val=data)
    straight, straight_history = fdl.fit(model(), data, epochs=4, **common)
    fdl.fit(model(), data, epochs=2, callbacks=[cb.ModelCheckpoint(best=tmp_path / "best.ckpt", last=tmp_path / "last.ckpt")], **common)
    template = fdl.init_train_state(model(), (4,), fdl.optim.make_optimizer("adam"), 0)
    restored, _ = fdl.load_checkpoint(tmp_path / "last.ckpt", template)
    resumed, resumed_history = fdl.fit(model(), data, epochs=4, state=restored, **common)
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
