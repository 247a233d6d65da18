"""Run and sweep directories, and safe file writes.

`RunDir` knows every file of a run directory and `SweepDir` every file of a
sweep directory: no other module spells one of their names. `create_run_dir`
makes a fresh `<base>/<name>-<YYYYmmdd-HHMMSS>` folder (never reusing one);
`write_json`, `write_text` and `write_bytes` replace a file atomically, so a
crash or an unencodable object never leaves a half-written or emptied file;
`append_jsonl`/`read_jsonl` handle one JSON object per line.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import io

import numpy as np

from fdl.io import to_python, write_bytes

__all__ = ["RunDir", "SweepDir", "create_run_dir", "write_bytes", "write_text", "write_json",
           "append_jsonl", "read_jsonl"]

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
        text = json.dumps(to_python(obj), indent=2)
    except TypeError as error:
        raise TypeError(f"write_json {os.fspath(path)}: {error}") from None
    return write_text(path, text + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> Path:
    """Appends `obj` as one JSON line to `path` (created with its folders if missing), flushed."""
    try:
        line = json.dumps(to_python(obj))
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


class _Folder:
    """A folder fdl writes (a run or a sweep directory): its path and how it is made."""

    KIND = "folder"  # in messages
    SUFFIX = ""      # after the name in `<base>/<name><SUFFIX>-<timestamp>`

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @classmethod
    def create(cls, base: str | os.PathLike, name: str):
        """A new `<base>/<name><SUFFIX>-<timestamp>` folder (see `create_run_dir`)."""
        return cls(create_run_dir(base, f"{name}{cls.SUFFIX}"))

    @classmethod
    def new(cls, path: str | os.PathLike):
        """The folder at `path`, created (parents too); one that already holds files is refused."""
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{cls.KIND} {str(path)!r} already holds files — choose a new folder")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)


class RunDir(_Folder):
    """One run directory and every file in it.

        config.yaml              the resolved configuration (`write_config`)
        env.json                 versions, devices, host, git commit (`write_env`)
        metrics.jsonl            one JSON object per epoch (fdl.records.RunRecorder)
        summary.json             final metrics of every split (`write_summary`)
        preprocess.npz           the preprocessing fitted on the training split (`write_preprocess`)
        checkpoints/<name>.ckpt  best, last and last_finite (`checkpoint(name)`)
        eval_<split>.json        what `fdl eval` measured (`write_eval`)
        samples.txt              text the trained model wrote, with a `sample:` section (`write_samples`)
        plots/  tensorboard/     learning curves and confusion matrix; event files

    Example:
      >>> run_dir = RunDir.create("runs", "mlp")
      >>> run_dir
      RunDir('runs/mlp-...')
      >>> config_path = run_dir.write_config("seed: 0")
      >>> RunDir.existing(run_dir.path).config_text()
      'seed: 0'
    """

    KIND = "run directory"
    CONFIG, ENV, METRICS, SUMMARY = "config.yaml", "env.json", "metrics.jsonl", "summary.json"
    PREPROCESS, CHECKPOINTS, PLOTS, TENSORBOARD = "preprocess.npz", "checkpoints", "plots", "tensorboard"
    SAMPLES = "samples.txt"

    @classmethod
    def existing(cls, path: str | os.PathLike) -> "RunDir":
        """A run directory `fdl train` wrote; anything else is refused naming the path."""
        run_dir = cls(path)
        if not run_dir.config_path.is_file():
            raise FileNotFoundError(f"{str(run_dir.path)!r} is not an fdl run directory (no "
                                    f"{cls.CONFIG}) — pass the folder `fdl train` printed")
        return run_dir

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def env_path(self) -> Path:
        return self.path / self.ENV

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def preprocess_path(self) -> Path:
        return self.path / self.PREPROCESS

    @property
    def samples_path(self) -> Path:
        return self.path / self.SAMPLES

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def plots_dir(self) -> Path:
        return self.path / self.PLOTS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    def checkpoint(self, name: str) -> Path:
        """checkpoints/<name>.ckpt: "best", "last" or "last_finite"."""
        return self.checkpoints_dir / f"{name}.ckpt"

    def plot(self, name: str) -> Path:
        """plots/<name>.png."""
        return self.plots_dir / f"{name}.png"

    def eval_path(self, split: str) -> Path:
        return self.path / f"eval_{split}.json"

    def config_text(self) -> str:
        return self.config_path.read_text(encoding="utf-8")

    def write_config(self, text: str) -> Path:
        return write_text(self.config_path, text)

    def write_env(self, environment: dict) -> Path:
        return write_json(self.env_path, environment)

    def write_summary(self, summary: dict) -> Path:
        return write_json(self.summary_path, summary)

    def summary(self) -> dict:
        return json.loads(self.summary_path.read_text(encoding="utf-8"))

    def write_eval(self, split: str, scores: dict) -> Path:
        return write_json(self.eval_path(split), scores)

    def write_samples(self, text: str) -> Path:
        """samples.txt: what a language model generated after training (UTF-8)."""
        return write_text(self.samples_path, text)

    def write_preprocess(self, method: str, stats: dict[str, np.ndarray]) -> Path:
        """Saves the fitted preprocessing: its method name and statistics arrays."""
        buffer = io.BytesIO()
        np.savez(buffer, method=np.array(method), **stats)
        return write_bytes(self.preprocess_path, buffer.getvalue())

    def preprocess(self) -> tuple[str, dict[str, np.ndarray]] | None:
        """(method, statistics) saved by `write_preprocess`, or None when the run had none."""
        if not self.preprocess_path.is_file():
            return None
        with np.load(self.preprocess_path) as saved:
            return str(saved["method"]), {k: saved[k] for k in saved.files if k != "method"}


class SweepDir(_Folder):
    """One sweep directory and every file in it.

        sweep.yaml        the base config with its resolved sweep section (`fdl sweep` runs it again)
        study.db          the default Optuna storage (SQLite)
        results.csv       one row per member
        members/<i>.jsonl member i's per-epoch logs
        best.yaml         the best point as a config `fdl train` runs as is
        plots/            metric vs each swept key, learning curves, Optuna's plots
    """

    KIND, SUFFIX = "sweep directory", "-sweep"
    SWEEP, STUDY, RESULTS, MEMBERS, BEST, PLOTS = (
        "sweep.yaml", "study.db", "results.csv", "members", "best.yaml", "plots")

    @property
    def sweep_path(self) -> Path:
        return self.path / self.SWEEP

    @property
    def study_url(self) -> str:
        return f"sqlite:///{(self.path / self.STUDY).resolve()}"

    @property
    def results_path(self) -> Path:
        return self.path / self.RESULTS

    @property
    def members_dir(self) -> Path:
        return self.path / self.MEMBERS

    def member_path(self, index: int) -> Path:
        return self.members_dir / f"{index}.jsonl"

    @property
    def best_path(self) -> Path:
        return self.path / self.BEST

    @property
    def plots_dir(self) -> Path:
        return self.path / self.PLOTS
