"""TensorBoard event files: `TensorBoardLogger` writes them, `read_scalars` reads them back.

`TensorBoardLogger` is an fdl callback writing every scalar of each epoch's
logs with tensorboardX's event writer at global step `logs["step"]`, under
tags that group in TensorBoard's sidebar (see `scalar_tag`). `read_scalars` parses the
event files with tensorboardX's protobuf classes alone — no TensorFlow or
tensorboard package — for tests and for users comparing runs in a notebook.

tensorboardX is imported inside the functions, so `import fdl.records` works
without it (install with `pip install "fdl[records]"`).
"""
from __future__ import annotations

import math
import os
import struct
import time
import uuid
from pathlib import Path

from fdl.records.plots import as_scalar, require, split_key
from fdl.train.callbacks import Callback, Run

__all__ = ["TensorBoardLogger", "scalar_tag", "read_records", "event_files", "read_scalars"]

_SPEED_KEYS = ("time_s", "steps_per_s")
_OPTIMIZER_KEYS = ("learning_rate",)


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a logged key.

    "loss" -> "train/loss", "val_accuracy" -> "val/accuracy", "test_loss" ->
    "test/loss", "learning_rate" -> "optim/learning_rate", "steps_per_s" ->
    "speed/steps_per_s", "time_s" -> "speed/time_s".
    """
    if key in _SPEED_KEYS:
        return f"speed/{key}"
    if key in _OPTIMIZER_KEYS:
        return f"optim/{key}"
    split, quantity = split_key(key)
    return f"{split}/{quantity}"


class TensorBoardLogger(Callback):
    """Writes each epoch's scalar logs to a TensorBoard event file in `log_dir`.

    One event per epoch at global step `logs["step"]` holding every scalar
    key (tags from `scalar_tag`; "epoch" and "step" are the axis, not curves;
    per-class arrays are skipped). The file is flushed (and fsynced) after an
    epoch when `flush_seconds` have passed since the last flush, so a running
    TensorBoard shows the latest epochs within that time, and closed at the
    end of training. A flush costs an fsync, ~4 ms here: flushing every epoch
    cost the MNIST-1D MLP more than its 3.4 ms epoch. A killed run loses
    nothing by it: the resumed run rewrites the file from its history. TensorBoard stores float32, so values read
    back are float32-rounded.

    Why not tensorboardX's SummaryWriter: its `flush()` flushes the file but
    not the queue its background thread drains, so events of the last epoch
    may still be missing after it (lanpa/tensorboardX#116, #558). This writes
    the same records synchronously with tensorboardX's own `EventsWriter`
    and `summary.scalar`.

    Example:
      >>> state, history = fdl.fit(model, train, val, epochs=2,
      ...                          callbacks=[TensorBoardLogger("runs/a/tensorboard")])
      >>> sorted(read_scalars("runs/a/tensorboard"))    # tag -> [(step, value), ...]
      ['optim/learning_rate', 'speed/steps_per_s', 'speed/time_s', 'train/loss', 'val/loss']

      then `tensorboard --logdir runs`.

    Raises:
      ImportError: tensorboardX is not installed (at construction, before training).
    """

    def __init__(self, log_dir: str | os.PathLike, *, flush_seconds: float = 5.0):
        require("tensorboardX")
        self.log_dir, self.flush_seconds = os.fspath(log_dir), flush_seconds
        self.writer = None
        self._flushed_at = -math.inf  # time.monotonic() of the last flush

    def on_train_begin(self, run: Run) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        if self.writer is None:
            os.makedirs(self.log_dir, exist_ok=True)
            # The suffix keeps two writers started in the same second (a resumed
            # run) from truncating each other's file; names still sort by time.
            self.writer = EventsWriter(os.path.join(self.log_dir, "events"),
                                       filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:6]}")

    def on_epoch_end(self, run: Run, epoch: int, logs: dict) -> None:
        if self.writer is None:  # used without on_train_begin (a hand-written loop)
            self.on_train_begin(run)
        self._write(epoch, logs)
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self._flush()

    def _flush(self) -> None:
        self.writer.flush()
        self._flushed_at = time.monotonic()

    def rewrite(self, history: list[dict]) -> None:
        """Makes `log_dir` hold exactly `history`'s epochs: a new event file with them, older files deleted.

        What a resumed run calls, so every epoch is in TensorBoard once.
        """
        older = event_files(self.log_dir)
        self.on_train_end(None)
        self.on_train_begin(None)
        for index, logs in enumerate(history):
            self._write(logs.get("epoch", index + 1), logs)
        self._flush()
        for path in older:
            path.unlink(missing_ok=True)

    def _write(self, epoch: int, logs: dict) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        values = []
        for key, value in logs.items():
            number = None if key in ("epoch", "step") else as_scalar(value)
            if number is not None:
                values.extend(scalar(scalar_tag(key), number).value)
        self.writer.write_event(Event(wall_time=time.time(), step=int(logs.get("step", epoch)),
                                      summary=Summary(value=values)))

    def on_train_end(self, run: Run) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# The TFRecord framing of event files: uint64 length, uint32 masked CRC-32C of
# the length, the data, uint32 masked CRC-32C of the data; little endian.
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def _masked_crc(data: bytes) -> int:
    from tensorboardX.crc32c import crc32c

    crc = crc32c(data) & 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: str | os.PathLike, check_crc: bool = True):
    """Yields the data of each record of one TFRecord file.

    A truncated last record (a writer still running or killed) ends the file
    quietly; a checksum mismatch raises ValueError naming the file and offset.
    """
    data = Path(path).read_bytes()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, length_crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length + _FOOTER.size
        if end > len(data):
            break
        if check_crc and _masked_crc(data[offset:offset + 8]) != length_crc:
            raise ValueError(f"{os.fspath(path)}: corrupt record length at byte {offset}")
        record = data[offset + _HEADER.size:end - _FOOTER.size]
        if check_crc and _masked_crc(record) != _FOOTER.unpack_from(data, end - _FOOTER.size)[0]:
            raise ValueError(f"{os.fspath(path)}: corrupt record at byte {offset}")
        yield record
        offset = end


def event_files(log_dir: str | os.PathLike) -> list[Path]:
    """The event files directly in `log_dir`, oldest first (their names start with a timestamp)."""
    return sorted(Path(log_dir).glob("events.out.tfevents.*"))


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of `log_dir`: tag -> [(step, value), ...] in write order.

    Reads the simple_value scalars tensorboardX writes and single-number
    tensor scalars (as torch and TensorFlow's newer writers store them).
    Sub-folders are not read.

    Raises:
      FileNotFoundError: `log_dir` holds no event file.
      ImportError: tensorboardX (whose protobuf classes parse the events) is missing.
    """
    require("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event

    files = event_files(log_dir)
    if not files:
        raise FileNotFoundError(f"read_scalars: no events.out.tfevents.* file in {os.fspath(log_dir)}")
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in files:
        for record in read_records(path):
            event = Event.FromString(record)
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                number = _value_number(value)
                if number is not None:
                    scalars.setdefault(value.tag, []).append((int(event.step), number))
    return scalars


def _value_number(value) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":
        numbers = list(value.tensor.float_val) or list(value.tensor.double_val)
        if len(numbers) == 1:
            return float(numbers[0])
    return None
