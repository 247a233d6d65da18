"""TensorBoard: events written through the callback hooks read back with exact steps and values."""
import struct

import numpy as np
import pytest

pytest.importorskip("tensorboardX")

from fdl.records import TensorBoardLogger, read_scalars, scalar_tag
from fdl.records.tensorboard import event_files


def f32(value):
    # TensorBoard stores scalars as float32 (Summary.Value.simple_value).
    return float(np.float32(value))


def test_events_read_back_with_exact_steps_and_values(tmp_path, fit_loop):
    history = fit_loop(TensorBoardLogger(tmp_path / "tb"), epochs=3, steps_per_epoch=10)
    scalars = read_scalars(tmp_path / "tb")
    expected_tags = {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "optim/learning_rate",
                     "speed/steps_per_s", "speed/time_s"}
    assert set(scalars) == expected_tags  # arrays, epoch and step are not curves
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "steps_per_s", "time_s"):
        assert scalars[scalar_tag(key)] == [(logs["step"], f32(logs[key])) for logs in history], key
    assert [step for step, _ in scalars["train/loss"]] == [10, 20, 30]


def test_events_are_flushed_at_most_every_flush_seconds(tmp_path, logs_for, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("fdl.records.tensorboard.time.monotonic", lambda: clock[0])
    logger = TensorBoardLogger(tmp_path, flush_seconds=5.0)
    run = None
    logger.on_train_begin(run)
    logger.on_epoch_end(run, 1, logs_for(1))  # the first epoch is flushed at once
    first = [(10, f32(logs_for(1)["loss"]))]
    assert read_scalars(tmp_path)["train/loss"] == first  # before close
    clock[0] += 4.0
    logger.on_epoch_end(run, 2, logs_for(2))  # within 5 s of the last flush: buffered
    assert read_scalars(tmp_path)["train/loss"] == first
    clock[0] += 1.0
    logger.on_epoch_end(run, 3, logs_for(3))  # 5 s since: epochs 2 and 3 flushed
    assert [step for step, _ in read_scalars(tmp_path)["train/loss"]] == [10, 20, 30]
    logger.on_train_end(run)


def test_scalar_tags():
    assert [scalar_tag(k) for k in ("loss", "val_loss", "test_f1", "accuracy", "learning_rate",
                                     "steps_per_s", "time_s", "val_")] == [
        "train/loss", "val/loss", "test/f1", "train/accuracy", "optim/learning_rate",
        "speed/steps_per_s", "speed/time_s", "train/val_"]


def test_read_scalars_stops_at_a_truncated_record_and_detects_corruption(tmp_path, fit_loop):
    fit_loop(TensorBoardLogger(tmp_path), epochs=2)
    (path,) = event_files(tmp_path)
    data = path.read_bytes()
    complete = read_scalars(tmp_path)
    path.write_bytes(data[:-3])  # the writer died inside the last record
    # One event per epoch: the truncated file keeps epoch 1 whole and drops epoch 2.
    assert read_scalars(tmp_path) == {tag: points[:1] for tag, points in complete.items()}
    length = struct.unpack_from("<Q", data)[0]
    corrupt = bytearray(data)
    corrupt[12 + length // 2] ^= 0xFF  # flip a byte inside the first record's data
    path.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupt record at byte 0"):
        read_scalars(tmp_path)


def test_read_scalars_without_events(tmp_path):
    with pytest.raises(FileNotFoundError, match="no events.out.tfevents"):
        read_scalars(tmp_path)
