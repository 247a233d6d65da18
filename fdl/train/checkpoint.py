"""Checkpoints: a TrainState (and metadata) in one msgpack file, written atomically.

Format: flax.serialization msgpack of `{"state": state_dict, "metadata": json}`.
A write goes to a temporary file in the same folder, is flushed and fsynced,
then `os.replace`d over the target, so a reader never sees half a file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import functools
import threading

import jax
import numpy as np

from fdl.io import to_python, write_bytes
from fdl.train.state import TrainState


__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointWriter"]


@functools.cache
def _serialization():
    """flax.serialization, imported on first use (flax is slow to import) and taught TrainState."""
    from flax import serialization

    fields = [field.name for field in dataclasses.fields(TrainState)]
    serialization.register_serialization_state(
        TrainState,
        lambda state: {name: serialization.to_state_dict(getattr(state, name)) for name in fields},
        lambda state, saved: state.replace(**{name: serialization.from_state_dict(getattr(state, name), saved[name])
                                              for name in fields}))
    return serialization


def save_checkpoint(path: str | os.PathLike, state: Any, *, metadata: dict | None = None) -> str:
    """Writes `state` (any pytree, e.g. a TrainState) and JSON-able `metadata` to `path`."""
    try:
        metadata_text = json.dumps(to_python(metadata or {}))
    except TypeError as error:
        raise TypeError(f"checkpoint metadata: {error}") from None
    serialization = _serialization()
    payload = {"state": serialization.to_state_dict(jax.device_get(state)), "metadata": metadata_text}
    write_bytes(path, serialization.msgpack_serialize(payload))
    return os.fspath(path)


def load_checkpoint(path: str | os.PathLike, target: Any = None) -> tuple[Any, dict]:
    """Reads a checkpoint written by `save_checkpoint`.

    Args:
      path: the checkpoint file.
      target: a pytree of the saved structure (e.g. a freshly initialized
        TrainState); when given, the result has its exact types.

    Returns:
      (state, metadata): the state as `target`'s type, or as nested dicts of
      numpy arrays when `target` is None.

    Raises:
      FileNotFoundError: naming the file, when it is missing.
      ValueError: naming the file, when it is not an fdl checkpoint, or when its
        keys or array shapes differ from `target`'s (naming the first such path).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist — pass the path of a "
                                "best.ckpt/last.ckpt file written by fdl")
    serialization = _serialization()
    with open(path, "rb") as file:
        try:
            payload = serialization.msgpack_restore(file.read())
            state_dict, metadata = payload["state"], json.loads(payload["metadata"])
        except Exception as error:
            raise ValueError(f"checkpoint {path!r} is not an fdl checkpoint ({error})") from None
    if target is None:
        return state_dict, metadata
    try:
        _check_matches(serialization.to_state_dict(target), state_dict)
        return serialization.from_state_dict(target, state_dict), metadata
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"checkpoint {path!r} does not match the model/optimizer given as "
                         f"target: {error} — build the target with the model and optimizer "
                         "the checkpoint was saved with") from None


def _check_matches(expected: dict, saved: dict) -> None:
    """Raises ValueError at the first path where `saved` differs from `expected` in keys or shapes.

    flax's `from_state_dict` ignores keys the target lacks and never compares
    shapes, so a checkpoint of another model would otherwise load silently.
    """
    expected_leaves = dict(_leaves_by_path(expected))
    saved_leaves = dict(_leaves_by_path(saved))
    # In the state's own order, so the first path named is the params', not the optimizer's copy.
    missing = [path for path in expected_leaves if path not in saved_leaves]
    if missing:
        raise ValueError(f"{missing[0]} is missing from the checkpoint")
    # The saved dicts went through jax.device_get, which sorts their keys: list by the target's fields.
    field_order = {field: i for i, field in enumerate(expected)}
    unexpected = sorted((path for path in saved_leaves if path not in expected_leaves),
                        key=lambda path: field_order.get(path.split("/")[0], len(field_order)))
    if unexpected:
        raise ValueError(f"the checkpoint has {unexpected[0]}, which the target lacks")
    for path, leaf in expected_leaves.items():
        got = np.shape(saved_leaves[path])
        if np.shape(leaf) != got:
            raise ValueError(f"{path} has shape {got} in the checkpoint, the target expects "
                             f"{np.shape(leaf)}")


def _leaves_by_path(tree, prefix: str = "") -> list[tuple[str, Any]]:
    """(path such as 'params/dense_0/w', leaf) in the dicts' own order (TrainState's field order).

    An empty dict has no leaves, so a target's `{}` against a saved `{"w": ...}` reports `w`.
    """
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [item for key, child in tree.items()
            for item in _leaves_by_path(child, f"{prefix}/{key}" if prefix else str(key))]


class CheckpointWriter:
    """Writes checkpoints in a background thread, keeping only the newest pending state per path.

    Training does not wait for serialization and fsync; if epochs end faster
    than files are written, a newer state for the same path replaces the one
    still waiting (the file always ends as the newest). `close()` writes what is
    pending and waits; a failed write is raised by the next `submit` or `close`.

    Example:
      >>> writer = CheckpointWriter()
      >>> writer.submit("ckpt/last.ckpt", state, {"epoch": 1})
      >>> writer.close()                                  # ckpt/last.ckpt holds epoch 1
    """

    def __init__(self):
        self._pending: dict = {}  # path -> (state, metadata), in submission order
        self._error: BaseException | None = None
        self._done = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, path: str | os.PathLike, state: Any, metadata: dict | None = None) -> None:
        """Queues `state` for `path` (replacing a state for it that is still waiting)."""
        self._raise_failure()
        with self._done:
            self._pending.pop(os.fspath(path), None)
            self._pending[os.fspath(path)] = (state, metadata)
            if self._thread is None:
                self._busy = True
                self._thread = threading.Thread(target=self._run, name="fdl-checkpoints", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Thread body: write until nothing is pending, then end (the next submit starts another)."""
        while True:
            with self._done:
                if not self._pending:
                    self._busy, self._thread = False, None
                    self._done.notify_all()
                    return
                path = next(iter(self._pending))
                state, metadata = self._pending.pop(path)
                self._busy = True
            try:
                save_checkpoint(path, state, metadata=metadata)
            except BaseException as error:  # noqa: BLE001 — raised in the training thread
                self._error = error

    def close(self) -> None:
        """Waits until every submitted state is written; raises a failed write."""
        with self._done:
            while self._pending or self._busy:
                self._done.wait()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
