"""Epochs in chunks (ModelCheckpoint(every_steps=N)): the numbers of whole epochs, bit for bit,
on every path; mid-epoch checkpoints; a signal mid-epoch and an exact resume from the chunk."""
import os
import signal

import jax
import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.data.order import batch_indices
from fdl.train import TrainingInterrupted
from fdl.train import callbacks as cb
from fdl.train.checkpoint import RunCheckpoints
from fdl.train.placement import device_epochs
from fdl.train.step import make_train_step

N, BATCH_SIZE, EPOCHS = 100, 8, 3  # 12 steps an epoch, 4 examples dropped
COMMON = dict(batch_size=BATCH_SIZE, verbose=0, seed=3, metrics=["accuracy", "roc_auc"],
              optimizer={"name": "adam", "learning_rate": 0.01})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    return x, y


def model():
    return nn.serial(nn.Dense(12), nn.Relu(), nn.Dropout(0.2), nn.Dense(2))


def arrays(tree):
    return jax.tree.map(np.asarray, tree)


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in ("time_s", "steps_per_s")} for row in history]


def assert_same_run(a, b):
    """Two (state, history) pairs are bit for bit the same run."""
    jax.tree.map(np.testing.assert_array_equal, arrays(a[0]), arrays(b[0]))
    assert without_timing(a[1]) == without_timing(b[1])


@pytest.fixture(scope="module")
def whole(data):
    """The reference: whole fused epochs, no checkpoints."""
    return fdl.fit(model(), data, val=data, epochs=EPOCHS, **COMMON)


@pytest.mark.parametrize("every_steps, path", [(1, {}), (5, {}), (12, {}), (5, {"fused": False}),
                                               (None, {"fused": False}), (5, {"placement": "host"}),
                                               (None, {"placement": "host"})])
def test_chunked_epochs_and_every_path_give_the_whole_epochs_numbers_bit_for_bit(data, whole, tmp_path,
                                                                                 every_steps, path):
    checkpoint = cb.ModelCheckpoint(tmp_path, monitor=None, every_steps=every_steps)
    run = fdl.fit(model(), data, val=data, epochs=EPOCHS, callbacks=[checkpoint], **COMMON, **path)
    assert_same_run(run, whole)
    steps = RunCheckpoints(tmp_path, keep=100).steps()
    assert steps[-1] == EPOCHS * 12
    if every_steps == 5:  # keep=2: the newest two of 5, 10, 12, 17, 22, 24, 29, 34, 36
        assert steps == [34, 36]


def test_the_gather_feed_in_chunks_equals_the_staged_whole_epoch(data):
    tx = fdl.optim.make_optimizer("adam", learning_rate=0.01)
    step = make_train_step(model(), fdl.losses.cross_entropy, tx)
    start = fdl.init_train_state(model(), (6,), tx, 0)
    staged = device_epochs(step, BATCH_SIZE, (), True, data, feed="staged")
    gather = device_epochs(step, BATCH_SIZE, (), True, data, feed="gather")
    expected = staged.run(start, 1)
    progress = gather.begin(start, 1)
    for begin, stop in ((0, 5), (5, 10), (10, 12)):
        progress = gather.advance(progress, 1, begin, stop)
    jax.tree.map(np.testing.assert_array_equal, arrays(gather.finish(progress)), arrays(expected))


class SignalAt(cb.Callback):
    """Sends SIGINT to this process at the end of the chunk (of every_steps) that reaches global step `step`."""

    def __init__(self, step, every_steps=5):
        self.step, self.every_steps = step, every_steps

    def on_chunk_end(self, run):
        if int(run.progress.state.step) == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("path", [{}, {"fused": False}, {"placement": "host"}], ids=["fused", "stepped", "host"])
def test_a_signal_mid_epoch_checkpoints_the_chunk_and_resume_continues_bit_for_bit(data, whole, tmp_path, path):
    callbacks = [cb.EarlyStopping("val_loss", patience=5), SignalAt(12 + 5),
                 cb.ModelCheckpoint(tmp_path, monitor="val_accuracy", every_steps=5)]
    with pytest.raises(TrainingInterrupted, match="SIGINT received: training stopped at step 5 of epoch 2") as caught:
        fdl.fit(model(), data, val=data, epochs=EPOCHS, callbacks=callbacks, **COMMON, **path)
    assert caught.value.epoch == 1 and caught.value.done == 5 and int(caught.value.state.step) == 17
    checkpoints = RunCheckpoints(tmp_path)
    assert checkpoints.steps() == [12, 17]  # epoch 1's end, then the chunk the signal let finish
    assert checkpoints.metadata(17)["epoch"] == 1 and len(checkpoints.metadata(17)["history"]) == 1
    # resumed without chunks: the rest of epoch 2 as one piece, then whole epochs — the same numbers
    callbacks = [cb.EarlyStopping("val_loss", patience=5), SignalAt(-1),
                 cb.ModelCheckpoint(tmp_path, monitor="val_accuracy", resume=True)]
    resumed = fdl.fit(model(), data, val=data, epochs=EPOCHS, callbacks=callbacks, **COMMON, **path)
    assert_same_run(resumed, whole)
    assert [row["epoch"] for row in resumed[1]] == [1, 2, 3]


def test_a_chunk_that_fails_is_not_checkpointed_and_the_error_names_its_step(data, tmp_path):
    x, y = data[0].copy(), data[1]
    start = fdl.init_train_state(model(), (6,), fdl.optim.make_optimizer("adam", learning_rate=0.01), COMMON["seed"])
    rows = np.asarray(batch_indices(start.rng, 0, N, BATCH_SIZE))
    x[rows[6][0]] = 3e38  # finite data whose step 7 overflows to a non-finite loss
    with pytest.raises(fdl.train.NonFiniteLossError, match=r"epoch 1, step 7 of the epoch \(global step 7") as error:
        fdl.fit(model(), (x, y), epochs=1, callbacks=[cb.ModelCheckpoint(tmp_path, monitor=None, every_steps=2)],
                **COMMON)
    assert int(error.value.state.step) == 6
    assert RunCheckpoints(tmp_path).steps() == [4, 6]  # the chunk of steps 7-8 was not kept
