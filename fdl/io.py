"""What every place that saves something shares: the atomic write and the JSON-ready value.

`write_bytes` writes a file atomically: a reader sees either the old file or
the complete new one, never a part. `to_python` turns device and numpy values
(a logged loss, a confusion matrix, checkpoint metadata) into the plain Python
values that `json` writes and tests compare.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["to_python", "write_bytes"]

_PLAIN = (bool, int, float, str, type(None))


def to_python(value: Any) -> Any:
    """The JSON-ready Python form of `value`, converted element by element.

    numpy and JAX values by their dtype: bool -> bool, signed and unsigned ints
    -> int, floats (bfloat16 and float16 included) -> float, strings -> str;
    0-d arrays and scalars give one Python scalar, other arrays nested lists.
    Lists and tuples become lists, mappings dicts (keys converted the same
    way), paths str; Python scalars and None are returned as they are (a
    Python int stays an int, a bool a bool).

    Example:
      >>> to_python({"loss": jnp.float32(0.25), "step": np.int64(3), "cm": np.eye(2, dtype=int)})
      {'loss': 0.25, 'step': 3, 'cm': [[1, 0], [0, 1]]}

    Raises:
      TypeError: anything else (objects, complex or object arrays, sets, ...);
        the message names the type, and the dtype for arrays.
    """
    if isinstance(value, _PLAIN) and not isinstance(value, np.generic):  # np.float64 is a float
        return value
    if isinstance(value, (list, tuple)):
        return [to_python(item) for item in value]
    if isinstance(value, Mapping):
        return {_key(key): to_python(item) for key, item in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "dtype") and hasattr(value, "__array__"):  # numpy and jax arrays and scalars
        return _array_to_python(np.asarray(value), type(value).__name__)
    raise TypeError(f"to_python: cannot convert type {type(value).__name__} to a JSON value — "
                    "pass numbers, strings, lists, dicts, numpy/jax arrays or paths")


def _array_to_python(array: np.ndarray, type_name: str):
    if array.dtype.kind in "biuU":
        return array.tolist()  # Python bool / int / str elements, by the dtype's kind
    if jnp.issubdtype(array.dtype, jnp.floating):  # also bfloat16, whose numpy kind is "V"
        return array.astype(np.float64).tolist()
    raise TypeError(f"to_python: cannot convert type {type_name} of dtype {array.dtype} to a "
                    "JSON value — only bool, integer, floating and string arrays")


def _key(key):
    plain = to_python(key)
    if not isinstance(plain, _PLAIN):
        raise TypeError(f"to_python: a mapping key must be a string or a scalar, got type "
                        f"{type(key).__name__} ({key!r})")
    return plain


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically: a temporary file in the same folder, fsync, rename.

    Readers see either the old file or the complete new one, never a part; the
    temporary file is removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # os.open with 0o666 honours the umask (tempfile.mkstemp would force 0o600).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
