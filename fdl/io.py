"""What every place that saves something shares: the atomic write, JSON lines, the JSON-ready value.

`write_bytes` writes a file atomically: a reader sees either the old file or
the complete new one, never a part; `write_jsonl` does so for a whole file of
JSON lines and `append_jsonl` adds one line. A failing write raises
`WriteError`, an OSError that names the file, the cause and the fix in one
line. `to_python` turns device and numpy values (a logged loss, a confusion
matrix, checkpoint metadata) into the plain Python values that `json` writes
and tests compare.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["WriteError", "append_jsonl", "is_temporary_name", "to_python", "write_bytes", "write_jsonl"]

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


class WriteError(OSError):
    """An OSError while saving a file, said in one line: the file, the cause and the fix.

    Built like an OSError, `WriteError(errno, strerror, filename)`, so `errno`
    is the original one (e.g. `errno.ENOSPC`) and the error pickles.
    """

    def __str__(self) -> str:
        fix = _WRITE_FIXES.get(self.errno, "check that folder")
        return f"could not write {self.filename}: {self.strerror} — {fix}, or write elsewhere"


_WRITE_FIXES = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EROFS: "remount that disk writable",
    errno.EACCES: "make that folder writable",
    errno.EPERM: "make that folder writable",
}


def _write_error(path: str | os.PathLike, error: OSError) -> WriteError:
    return WriteError(error.errno, error.strerror or str(error), os.fspath(path))


# `.{name}.{pid}.{8 hex digits}.tmp`: the one name write_bytes gives its temporary files.
_TEMPORARY_NAME = re.compile(r"\..+\.[0-9]+\.[0-9a-f]{8}\.tmp")


def is_temporary_name(name: str) -> bool:
    """Whether `name` is that of a temporary file `write_bytes` makes (one an interrupted write leaves)."""
    return _TEMPORARY_NAME.fullmatch(name) is not None


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically: a temporary file in the same folder, fsync, rename.

    Readers see either the old file or the complete new one, never a part; the
    temporary file (`.{name}.{pid}.{hex}.tmp`, see `is_temporary_name`) is
    removed if anything fails.

    Raises:
      WriteError: the folder or file could not be written (a full disk, a
        read-only disk, no permission, ...); `errno` is the original one.
    """
    path = Path(path)
    try:
        _replace(path, data)
    except OSError as error:
        raise _write_error(path, error) from None
    _fsync_directory(path.parent)
    return path


def _replace(path: Path, data: bytes) -> None:
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


def _json_line(obj: Any, path: str | os.PathLike) -> bytes:
    """`obj` as one line of JSON with its newline; a TypeError names `path` and the type."""
    try:
        return (json.dumps(to_python(obj)) + "\n").encode("utf-8")
    except TypeError as error:
        raise TypeError(f"{os.fspath(path)}: {error}") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Replaces `path` atomically with exactly `rows`, one JSON object per line (see `write_bytes`).

    Every row is encoded before the file is touched.

    Raises:
      TypeError: a row holds something JSON cannot encode (names the file and the type).
      WriteError: the file could not be written.
    """
    return write_bytes(path, b"".join(_json_line(row, path) for row in rows))


def append_jsonl(path: str | os.PathLike, obj: Any) -> Path:
    """Appends `obj` as one JSON line to `path` (created with its folders if missing), flushed.

    A last line without its newline (a writer killed mid-line) is cut off
    first, so the new line never joins a broken one.

    Raises:
      TypeError: `obj` holds something JSON cannot encode (names the file and the type).
      WriteError: the file could not be written.
    """
    line = _json_line(obj, path)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as file:  # appends go to the end whatever the position
            _drop_partial_line(file)
            file.write(line)
            file.flush()
    except OSError as error:
        raise _write_error(path, error) from None
    return path


def _drop_partial_line(file) -> None:
    """Truncates an open file just after its last newline when it does not end with one."""
    end = file.seek(0, os.SEEK_END)
    if end == 0:
        return
    file.seek(end - 1)
    if file.read(1) == b"\n":
        return
    file.seek(0)
    # Only after an interrupted write, so reading the whole (one line per epoch) file is fine.
    file.truncate(file.read().rfind(b"\n") + 1)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
