"""Checkpoints: a TrainState (and metadata) in one msgpack file, written atomically.

Format: flax.serialization msgpack of `{"state": state_dict, "metadata": json}`.
A write goes to a temporary file in the same folder, is flushed and fsynced,
then `os.replace`d over the target, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from flax import serialization

from fdl.io import to_python, write_bytes


__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: str | os.PathLike, state: Any, *, metadata: dict | None = None) -> str:
    """Writes `state` (any pytree, e.g. a TrainState) and JSON-able `metadata` to `path`."""
    try:
        metadata_text = json.dumps(to_python(metadata or {}))
    except TypeError as error:
        raise TypeError(f"checkpoint metadata: {error}") from None
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
