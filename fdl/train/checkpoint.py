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

from fdl.io import write_bytes


def save_checkpoint(path: str | os.PathLike, state: Any, *, metadata: dict | None = None) -> str:
    """Writes `state` (any pytree, e.g. a TrainState) and JSON-able `metadata` to `path`."""
    payload = {"state": serialization.to_state_dict(jax.device_get(state)),
               "metadata": json.dumps(metadata or {}, default=_jsonable)}
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
      FileNotFoundError / ValueError naming the file when it is missing, not a
      checkpoint, or does not match `target`.
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
        return serialization.from_state_dict(target, state_dict), metadata
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"checkpoint {path!r} does not match the model/optimizer given as "
                         f"target: {error}") from None


def _jsonable(value):
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
