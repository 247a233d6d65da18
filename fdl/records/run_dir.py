"""The run directory and safe file writes.

`create_run_dir` makes a fresh `<base>/<name>-<YYYYmmdd-HHMMSS>` folder (never
reusing one); `write_json`, `write_text` and `write_bytes` replace a file
atomically, so a crash or an unencodable object never leaves a half-written or
emptied file; `append_jsonl`/`read_jsonl` handle one JSON object per line. The
file names a run directory holds are the constants below.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from fdl.io import write_bytes

# What a run directory holds (fdl.records writes them; the command line reads them).
METRICS_FILE = "metrics.jsonl"  # one JSON object per epoch: the logs `fit` passes callbacks
ENV_FILE = "env.json"  # fdl.records.environment()
SUMMARY_FILE = "summary.json"  # fdl.records.run_summary()
CONFIG_FILE = "config.yaml"  # the resolved configuration the run used
PLOTS_DIR = "plots"  # one PNG per logged scalar quantity
TENSORBOARD_DIR = "tensorboard"  # tensorboardX event files


def create_run_dir(base: str | os.PathLike = "runs", name: str = "run") -> Path:
    """Creates and returns a new directory `<base>/<name>-<YYYYmmdd-HHMMSS>`.

    If that directory exists (two runs started in the same second) the suffix
    `-2`, `-3`, ... is added; `mkdir` is atomic, so concurrent callers never
    share a directory.

    Raises:
      ValueError: `name` is empty or contains a path separator.
    """
    if not name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise ValueError(f"create_run_dir: name must be a plain folder name, got {name!r} — "
                         "put parent folders in `base`")
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(1, 10_000):
        path = base / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"create_run_dir: 9999 directories named {stem}-* already exist in {base}")


def to_json_value(value: Any) -> Any:
    """The JSON form of numpy/jax arrays (nested lists), their scalars (float/int/bool) and paths.

    Raises:
      TypeError: anything else json cannot encode.
    """
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy and jax arrays and scalars
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON — convert it to a "
                    "number, string, list or dict first")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` (UTF-8) to `path` atomically (see `write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as indented JSON atomically; numpy/jax arrays become lists, scalars numbers.

    The object is encoded before any file is touched, so an unencodable object
    leaves the previous file as it was.

    Raises:
      TypeError: `obj` holds something JSON cannot encode (the message names the type).
    """
    try:
        text = json.dumps(obj, indent=2, default=to_json_value)
    except TypeError as error:
        raise TypeError(f"write_json {os.fspath(path)}: {error}") from None
    return write_text(path, text + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> Path:
    """Appends `obj` as one JSON line to `path` (created with its folders if missing), flushed."""
    try:
        line = json.dumps(obj, default=to_json_value)
    except TypeError as error:
        raise TypeError(f"append_jsonl {os.fspath(path)}: {error}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()
    return path


def read_jsonl(path: str | os.PathLike) -> list:
    """The objects of a JSON-lines file, one per non-empty line.

    A last line without its newline (a writer killed mid-line) is ignored; a
    broken line elsewhere raises ValueError naming the file and line.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):  # the unterminated last line of an interrupted write
                break
            raise ValueError(f"{os.fspath(path)} line {number}: not JSON ({error.msg})") from None
    return rows
