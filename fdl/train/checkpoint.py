"""Checkpoints on orbax-checkpoint, each verified by checksums when it is read back.

A checkpoint is an orbax folder of named items — pytrees of arrays such as
"state" (a TrainState) — and one JSON item "meta" that holds the caller's
metadata and a manifest: every array's path, shape, dtype and CRC-32. Reading
compares the manifest with the target (a checkpoint of another model is
refused, naming the first differing array) and every restored array with its
CRC (a flipped byte is refused, never loaded), and the metadata with its own CRC.

    save_checkpoint(path, state, metadata=...)   one checkpoint folder, written now
    load_checkpoint(path, target)                 it, or a single-file .ckpt of fdl 0.1
    RunCheckpoints(folder, keep=2)                numbered checkpoints <folder>/<step>/ of a run
                                                  (orbax's CheckpointManager), written in the
                                                  background, read back newest good first
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fdl.io import to_python
from fdl.train.mesh import host_copy
from fdl.train.state import TrainState


__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "RunCheckpoints"]

META = "meta"      # the JSON item: {"metadata", "manifest", "crc"}
MAX_PENDING = 2    # checkpoints queued for the writer at most; a further save waits for the oldest
FORMAT = 2         # fdl 0.1 wrote one msgpack file per checkpoint (format 1, read only)


class CheckpointError(ValueError):
    """A checkpoint that is damaged (checksums, truncation) or does not match its target."""


@functools.cache
def _orbax():
    """orbax.checkpoint, imported on first use (it takes ~0.4 s)."""
    import orbax.checkpoint as ocp

    return ocp


def _key_name(key) -> str:
    for attribute in ("name", "key", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def leaves_by_path(tree) -> list[tuple[str, Any]]:
    """(path such as "params/dense_0/w", leaf) for every array of `tree`, in its flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [("/".join(_key_name(key) for key in path), leaf) for path, leaf in flat]


def _crc(array: np.ndarray) -> int:
    """CRC-32 of the array's bytes in C order, read in place (a copy only when not contiguous)."""
    return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def manifest(tree) -> dict[str, list]:
    """path -> [shape, dtype, CRC-32 of the bytes] of every array of a host pytree."""
    return {path: [list(np.shape(leaf)), str(np.asarray(leaf).dtype), _crc(np.asarray(leaf))]
            for path, leaf in leaves_by_path(tree)}


def _json_metadata(metadata: dict | None) -> dict:
    try:
        return to_python(metadata or {})
    except TypeError as error:
        raise TypeError(f"checkpoint metadata: {error}") from None


def _meta(items: dict, metadata: dict) -> dict:
    """The meta item of host `items` and JSON `metadata` (`_json_metadata`): manifest, CRCs."""
    body = {"format": FORMAT, "metadata": metadata,
            "manifest": {name: manifest(tree) for name, tree in items.items()}}
    return {**body, "crc": _text_crc(body)}


def _text_crc(body: dict) -> int:
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def _check_meta(where: str, meta: Any) -> dict:
    if not isinstance(meta, dict) or "crc" not in meta:
        raise CheckpointError(f"checkpoint {where}: its {META} item is missing or damaged")
    body = {key: value for key, value in meta.items() if key != "crc"}
    if _text_crc(body) != meta["crc"]:
        raise CheckpointError(f"checkpoint {where}: its {META} item fails its checksum (damaged)")
    return body


def _check_target(where: str, item: str, saved: dict[str, list], target) -> None:
    """Raises CheckpointError at the first array where `target` differs from the manifest."""
    expected = leaves_by_path(target)
    paths = {path for path, _ in expected}
    for path, leaf in expected:
        if path not in saved:
            raise CheckpointError(f"checkpoint {where}: {item} {path} is missing from the checkpoint — "
                                  "build the target with the model and optimizer it was saved with")
        if list(np.shape(leaf)) != saved[path][0]:
            raise CheckpointError(f"checkpoint {where}: {item} {path} has shape {tuple(saved[path][0])} in "
                                  f"the checkpoint, the target expects {tuple(np.shape(leaf))} — build the "
                                  "target with the model the checkpoint was saved with")
    extra = [path for path in saved if path not in paths]
    if extra:
        raise CheckpointError(f"checkpoint {where}: it has {item} {extra[0]}, which the target lacks — "
                              "build the target with the model and optimizer it was saved with")


def _check_arrays(where: str, item: str, saved: dict[str, list], restored) -> None:
    for path, leaf in leaves_by_path(restored):
        if _crc(np.asarray(leaf)) != saved[path][2]:
            raise CheckpointError(f"checkpoint {where}: {item} {path} fails its checksum (damaged)")


def _save_args(items: dict, meta: dict):
    ocp = _orbax()
    return ocp.args.Composite(**{name: ocp.args.StandardSave(tree) for name, tree in items.items()},
                              **{META: ocp.args.JsonSave(meta)})


def _unreadable(where: str, error: Exception) -> CheckpointError:
    first = str(error).splitlines()[0] if str(error) else ""
    return CheckpointError(f"checkpoint {where}: cannot be read ({type(error).__name__}: {first})")


def _read_meta(where: str, restore) -> dict:
    """The checked meta item: {"format", "metadata", "manifest"}."""
    ocp = _orbax()
    try:
        meta = restore(ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
    except Exception as error:  # orbax/tensorstore: a truncated or missing file
        raise _unreadable(where, error) from None
    return _check_meta(where, meta)


def _restore(where: str, restore, targets: dict[str, Any]) -> tuple[dict, dict]:
    """Reads the meta item, then the `targets` items it lists, each checked; (items, metadata)."""
    ocp = _orbax()
    body = _read_meta(where, restore)
    wanted = {name: target for name, target in targets.items() if name in body["manifest"]}
    for name, target in wanted.items():
        if target is not None:
            _check_target(where, name, body["manifest"][name], target)
    try:
        restored = restore(ocp.args.Composite(**{
            name: ocp.args.StandardRestore(None if target is None else jax.device_get(target))
            for name, target in wanted.items()}))
    except Exception as error:
        raise _unreadable(where, error) from None
    items = {name: restored[name] for name in wanted}
    for name, tree in items.items():
        _check_arrays(where, name, body["manifest"][name], tree)
    return items, body["metadata"]


def save_checkpoint(path: str | os.PathLike, state: Any, *, metadata: dict | None = None) -> str:
    """Writes `state` (any pytree, e.g. a TrainState) and JSON-able `metadata` to the folder `path`.

    orbax writes into a temporary folder and renames it when complete, so
    `path` is either absent or whole; an existing checkpoint there is replaced.
    """
    path = Path(path).absolute()
    items = {"state": host_copy(state)}
    meta = _meta(items, _json_metadata(metadata))
    path.parent.mkdir(parents=True, exist_ok=True)
    with _orbax().Checkpointer(_orbax().CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=_save_args(items, meta), force=True)
    return os.fspath(path)


def load_checkpoint(path: str | os.PathLike, target: Any = None) -> tuple[Any, dict]:
    """Reads a checkpoint written by `save_checkpoint` (or a `.ckpt` file of fdl 0.1).

    Args:
      path: the checkpoint folder (or file).
      target: a pytree of the saved structure (e.g. a freshly initialized
        TrainState); when given, the result has its exact types.

    Returns:
      (state, metadata): the state as `target`'s type, or as nested dicts of
      numpy arrays when `target` is None.

    Raises:
      FileNotFoundError: naming the path, when it is missing.
      CheckpointError (a ValueError): naming the path, when it is not an fdl
        checkpoint, fails a checksum, or differs from `target` in an array's
        path or shape (naming the first such array).
    """
    path = Path(path).absolute()
    if path.is_file():
        return _load_legacy_checkpoint(path, target)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist — pass a checkpoint "
                                "folder written by fdl (a run's checkpoints/<step>)")
    with _orbax().Checkpointer(_orbax().CompositeCheckpointHandler()) as checkpointer:
        items, metadata = _restore(repr(os.fspath(path)), lambda args: checkpointer.restore(path, args=args),
                                   {"state": target})
    if "state" not in items:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds no state item")
    return items["state"], metadata


class RunCheckpoints:
    """The numbered checkpoints `<folder>/<step>/` of one run, on orbax's CheckpointManager.

    `save` returns at once: a background thread computes the checksums and
    hands the (host) arrays to orbax (at most MAX_PENDING saves wait for it; a
    further one waits for the oldest, so a slow disk cannot pile up copies of
    the state in memory). Over several processes (`jax.distributed`) every
    process calls `save` at the same steps, and orbax writes each checkpoint
    collectively into the folder they share, at once: its barriers between
    processes must not run beside the training's collectives. orbax writes each checkpoint into a temporary folder and renames it
    when complete, so a kill never leaves a half checkpoint under a step's name
    (and the manager removes the temporary ones it finds). The newest `keep`
    are kept. `newest` reads them back newest first and skips, with a one-line
    warning each, those that fail their checksums.

    Example:
      >>> checkpoints = RunCheckpoints("run/checkpoints", keep=2)
      >>> checkpoints.save(100, {"state": state}, {"epoch": 1})
      >>> checkpoints.close()                                 # waits for the write
      >>> step, items, metadata = checkpoints.newest({"state": state})
      >>> step, metadata
      (100, {'epoch': 1})
    """

    def __init__(self, folder: str | os.PathLike, *, keep: int = 2):
        self.folder, self.keep = Path(folder).absolute(), keep
        self._opened = None  # orbax's manager, made on first use: a new run's first save imports orbax
        # (~0.4 s) in the writer thread, beside the first epoch, instead of before training
        self._lock = threading.Lock()  # one orbax call at a time
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="fdl-checkpoints")  # writes in order
        self._writes: list[Future] = []

    @property
    def _manager(self):
        """orbax's CheckpointManager of the folder (call with `_lock` held)."""
        if self._opened is None:
            ocp = _orbax()
            self._opened = ocp.CheckpointManager(
                self.folder, options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.keep, create=True, cleanup_tmp_directories=True,
                    enable_async_checkpointing=False))
        return self._opened

    def steps(self) -> list[int]:
        """The complete checkpoints' steps, oldest first."""
        with self._lock:
            if self._opened is None and not (self.folder.is_dir() and any(self.folder.iterdir())):
                return []  # nothing there yet: no need to open orbax before training starts
            self._manager.reload()
            return sorted(self._manager.all_steps())

    def save(self, step: int, items: dict[str, Any], metadata: dict) -> None:
        """Queues the checkpoint of `step` (skipped when that step is saved already).

        items: name -> pytree of arrays (copied to the host now, so training
        may go on); metadata: JSON-able. A failed write is raised by the next
        `save` or by `wait`/`close`.
        """
        self._raise_failure()
        if len(self._writes) >= MAX_PENDING:  # a starved writer: wait (the cores idle, so it runs)
            self._writes.pop(0).result()
        items, metadata = host_copy(items), _json_metadata(metadata)
        if jax.process_count() > 1:  # orbax's barriers then run between the steps' collectives, never beside
            self._write(int(step), items, metadata)
            return
        self._writes.append(self._worker.submit(self._write, int(step), items, metadata))

    def _write(self, step: int, items: dict, metadata: dict) -> None:
        """In the writer thread: the checksums, then orbax's save."""
        meta = _meta(items, metadata)
        with self._lock:
            if step not in self._manager.all_steps():
                self._manager.save(step, args=_save_args(items, meta))

    def restore(self, step: int, targets: dict[str, Any]) -> tuple[dict, dict]:
        """(items, metadata) of `step`'s checkpoint, checked; raises CheckpointError naming it."""
        where = repr(os.fspath(self.folder / str(step)))
        with self._lock:
            return _restore(where, lambda args: self._manager.restore(step, args=args), targets)

    def metadata(self, step: int) -> dict:
        """The metadata of `step`'s checkpoint (its meta item checked; the arrays not read)."""
        where = repr(os.fspath(self.folder / str(step)))
        with self._lock:
            return _read_meta(where, lambda args: self._manager.restore(step, args=args))["metadata"]

    def newest(self, targets: dict[str, Any]) -> tuple[int, dict, dict] | None:
        """(step, items, metadata) of the newest checkpoint that reads back whole, or None if none exist.

        A damaged one is named in a warning and the next older is tried.

        Raises:
          CheckpointError: checkpoints exist but none is good (naming the folder).
        """
        steps = self.steps()
        for step in reversed(steps):
            try:
                items, metadata = self.restore(step, targets)
            except CheckpointError as error:
                warnings.warn(f"{error} — skipping it, trying an older one", RuntimeWarning, stacklevel=2)
                continue
            return step, items, metadata
        if steps:
            raise CheckpointError(f"no good checkpoint in {os.fspath(self.folder)!r}: all {len(steps)} are "
                                  "damaged — start the run again without --resume")
        return None

    def wait(self) -> None:
        """Waits for every queued write; raises a failed one."""
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()

    def close(self) -> None:
        """`wait`, then releases orbax's manager."""
        try:
            self.wait()
        finally:
            self._worker.shutdown(wait=True)
            with self._lock:
                if self._opened is not None:
                    self._opened.close()

    def _raise_failure(self) -> None:
        done = [write for write in self._writes if write.done()]
        self._writes = [write for write in self._writes if not write.done()]
        for write in done:
            write.result()


# fdl 0.1 wrote one msgpack file per checkpoint; it is read still (save it again to convert).

@functools.cache
def _serialization():
    """flax.serialization, imported on first use and taught TrainState."""
    from flax import serialization

    fields = [field.name for field in dataclasses.fields(TrainState)]
    serialization.register_serialization_state(
        TrainState,
        lambda state: {name: serialization.to_state_dict(getattr(state, name)) for name in fields},
        lambda state, saved: state.replace(**{name: serialization.from_state_dict(getattr(state, name), saved[name])
                                              for name in fields}))
    return serialization


def _load_legacy_checkpoint(path: str | os.PathLike, target: Any = None) -> tuple[Any, dict]:
    """(state, metadata) of an fdl 0.1 `.ckpt` file (msgpack of {"state", "metadata"}); see `load_checkpoint`."""
    path = os.fspath(path)
    serialization = _serialization()
    with open(path, "rb") as file:
        try:
            payload = serialization.msgpack_restore(file.read())
            state_dict, metadata = payload["state"], json.loads(payload["metadata"])
        except Exception as error:
            raise CheckpointError(f"checkpoint {path!r} is not an fdl checkpoint ({error})") from None
    if target is None:
        return state_dict, metadata
    try:
        _check_matches(serialization.to_state_dict(target), state_dict)
        return serialization.from_state_dict(target, state_dict), metadata
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path!r} does not match the model/optimizer given as "
                              f"target: {error} — build the target with the model and optimizer "
                              "the checkpoint was saved with") from None


def _check_matches(expected: dict, saved: dict) -> None:
    """Raises ValueError at the first path where `saved` differs from `expected` in keys or shapes."""
    expected_leaves, saved_leaves = dict(_leaves(expected)), dict(_leaves(saved))
    missing = [path for path in expected_leaves if path not in saved_leaves]
    if missing:
        raise ValueError(f"{missing[0]} is missing from the checkpoint")
    unexpected = [path for path in saved_leaves if path not in expected_leaves]
    if unexpected:
        raise ValueError(f"the checkpoint has {unexpected[0]}, which the target lacks")
    for path, leaf in expected_leaves.items():
        if np.shape(leaf) != np.shape(saved_leaves[path]):
            raise ValueError(f"{path} has shape {np.shape(saved_leaves[path])} in the checkpoint, the "
                             f"target expects {np.shape(leaf)}")


def _leaves(tree, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [item for key, child in tree.items() for item in _leaves(child, f"{prefix}/{key}" if prefix else str(key))]
