"""Run and sweep directories, and safe file writes.

`RunDir` knows every file of a run directory and `SweepDir` every file of a
sweep directory: no other module spells one of their names. `create_run_dir`
makes a fresh `<base>/<name>-<YYYYmmdd-HHMMSS>` folder (never reusing one);
`write_json`, `write_text` and `write_bytes` replace a file atomically, so a
crash or an unencodable object never leaves a half-written or emptied file;
`append_jsonl`/`read_jsonl` handle one JSON object per line (fdl.io writes).
`RunDir.lock()` keeps a second process out of a run directory in use.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from fdl.io import append_jsonl, is_temporary_name, to_python, write_bytes, write_jsonl
from fdl.records.tensorboard import event_files

__all__ = ["RunDir", "RunDirLockedError", "SweepDir", "create_run_dir", "write_bytes", "write_text",
           "write_json", "append_jsonl", "read_jsonl"]

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


class RunDirLockedError(RuntimeError):
    """Another process holds the lock of a run directory (`RunDir.lock`)."""


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
            raise cls._holds_files(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def _holds_files(cls, path: Path) -> FileExistsError:
        return FileExistsError(f"{cls.KIND} {str(path)!r} already holds files — choose a new folder")


class RunDir(_Folder):
    """One run directory and every file in it.

        config.yaml              the resolved configuration (`write_config`)
        env.json                 versions, devices, host, git commit (`write_env`)
        metrics.jsonl            one JSON object per epoch (fdl.records.RunRecorder)
        summary.json             final metrics of every split (`write_summary`)
        preprocess.npz           the preprocessing fitted on the training split (`write_preprocess`)
        checkpoints/<step>/      the run's checkpoints (fdl.train.RunCheckpoints: orbax; each holds
                                 the state, the best state so far, callbacks and history)
        checkpoints/last_finite  the last finite state of a run stopped by a NaN (`checkpoint(name)`)
        eval_<split>.json        what `fdl eval` measured (`write_eval`)
        samples.txt              text the trained model wrote, with a `sample:` section (`write_samples`)
        plots/  tensorboard/     learning curves and confusion matrix; event files
        .lock                    the pid of the process training in it (`lock`)

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
    SAMPLES, LOCK = "samples.txt", ".lock"
    # The fix for a missing or damaged file that `fdl train` wrote, in error messages.
    RESTORE = "restore it from a copy of the run directory, or train the run again"

    @classmethod
    def new(cls, path: str | os.PathLike) -> "RunDir":
        """The run directory at `path`, created (parents too); one that holds a run's records is refused.

        A folder that a start-up killed before its first epoch left is reused: when
        it holds only config.yaml, env.json, preprocess.npz, an empty metrics.jsonl,
        temporary files, TensorBoard's first event files, the lock and otherwise
        empty plots/ tensorboard/ checkpoints/ folders, those files are removed
        (holding the lock) and the folder is returned. The lock file stays:
        deleting it would let a second process lock a new file while the first
        holds the old one.

        Example:
          >>> run_dir = fdl.records.RunDir.new("runs/killed")
          >>> config_path = run_dir.write_config("seed: 0")  # ... and the process was killed here
          >>> sorted(path.name for path in fdl.records.RunDir.new("runs/killed").path.iterdir())
          ['.lock']

        Raises:
          FileExistsError: the folder holds anything else (metrics.jsonl with
            content, summary.json, a file in checkpoints/, any other file).
          RunDirLockedError: a start-up is still running there.
        """
        run_dir = cls(path)
        if not (run_dir.path.is_dir() and any(run_dir.path.iterdir())):
            return super().new(path)
        run_dir._startup_leftovers()  # refuses the folder before the lock adds its file to it
        with run_dir.lock():
            for leftover in run_dir._startup_leftovers():  # listed again: nothing is added under the lock
                leftover.unlink()
        return run_dir

    def _startup_leftovers(self) -> list[Path]:
        """The files a start-up killed before its first epoch left, to remove (see `new`).

        Those are the folder's files but the lock, and those in its plots/ tensorboard/ checkpoints/.

        Raises:
          FileExistsError: one of them is not written before the first epoch is recorded.
        """
        folders = (self.plots_dir, self.tensorboard_dir, self.checkpoints_dir)
        files = []
        for entry in self.path.iterdir():
            if entry in folders and entry.is_dir():
                files += entry.iterdir()
            elif entry.name != self.LOCK:
                files.append(entry)
        if not all(self._written_at_startup(file) for file in files):
            raise self._holds_files(self.path)
        return files

    def _written_at_startup(self, path: Path) -> bool:
        """Whether `path` is a file `fdl train` writes before it records its first epoch."""
        if not path.is_file() or path.parent == self.checkpoints_dir:
            return False  # a folder, or a checkpoint: training was recorded
        if is_temporary_name(path.name):
            return True
        if path.parent == self.tensorboard_dir:
            # The event file is opened when training begins; its scalars come with each epoch's metrics line.
            return path in event_files(self.tensorboard_dir)
        if path.parent != self.path:
            return False
        if path.name == self.METRICS:
            return path.stat().st_size == 0
        return path.name in (self.CONFIG, self.ENV, self.PREPROCESS)

    @contextlib.contextmanager
    def lock(self) -> Iterator["RunDir"]:
        """Holds the run directory's exclusive lock for a `with` block; a second holder is refused at once.

        An advisory `fcntl.flock` on `<run_dir>/.lock` (made, with the folder, if
        missing), which holds the holder's pid while it is held. The lock is
        released when the block ends and when the process dies, however it dies.
        It is per open file, so one process cannot hold it twice either.

        Example:
          >>> import os
          >>> run_dir = fdl.records.RunDir.create("runs", "mlp")
          >>> with run_dir.lock():  # fdl train holds it while it trains
          ...     int(run_dir.lock_path.read_text()) == os.getpid()
          True

        Raises:
          RunDirLockedError: another holder has it; the message names the folder and its pid.
        """
        import fcntl  # POSIX only: imported here so that fdl imports everywhere

        self.path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._locked_error(os.pread(descriptor, 32, 0)) from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
            try:
                yield self
            finally:
                os.ftruncate(descriptor, 0)  # the next reader never sees a pid that no longer holds it
        finally:
            os.close(descriptor)  # releases the lock

    def _locked_error(self, holder: bytes) -> RunDirLockedError:
        pid = holder.decode("ascii", "replace").strip()
        who = f"process {pid}" if pid else "another process"
        return RunDirLockedError(f"run directory {str(self.path)!r} is in use by {who} (it holds "
                                 f"{self.lock_path}) — wait for it to finish or pass another --out")

    def remove_temporary_files(self) -> list[Path]:
        """Deletes the temporary files interrupted writes left; returns their paths, sorted.

        Those are `write_bytes`'s `.{name}.{pid}.{hex}.tmp` files (fdl.io.is_temporary_name),
        anywhere under the run directory but in checkpoints/, whose files the
        checkpointer manages. Call it holding the `lock`: a write in progress has
        such a file too.
        """
        removed = []
        for folder, subfolders, names in os.walk(self.path):
            if folder == os.fspath(self.path):
                subfolders[:] = [name for name in subfolders if name != self.CHECKPOINTS]
            for name in filter(is_temporary_name, names):
                path = Path(folder, name)
                path.unlink()
                removed.append(path)
        return sorted(removed)

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
    def lock_path(self) -> Path:
        return self.path / self.LOCK

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
        """checkpoints/<name>: a named checkpoint folder ("last_finite"), or with `.ckpt` the
        single file an fdl 0.1 run wrote ("best.ckpt", "last.ckpt"; read, never written)."""
        return self.checkpoints_dir / name

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

    def rewrite_metrics(self, rows: Iterable[dict]) -> Path:
        """Replaces metrics.jsonl atomically with exactly `rows`, one JSON object per line (fdl.io.write_jsonl)."""
        return write_jsonl(self.metrics_path, rows)

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
        """(method, statistics) saved by `write_preprocess`, or None when there is no preprocess.npz.

        Raises:
          ValueError: the file is damaged (truncated, not an .npz archive, no
            method); the message names it.
        """
        path = self.preprocess_path
        if not path.is_file():
            return None
        if not zipfile.is_zipfile(path):  # np.load would take it for a pickle and say so
            raise self._damaged(path, "not an .npz archive")
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
        except (zipfile.BadZipFile, EOFError, ValueError) as error:
            raise self._damaged(path, str(error)) from None
        if "method" not in arrays:
            raise self._damaged(path, "no method")
        return str(arrays.pop("method")), arrays

    @classmethod
    def _damaged(cls, path: Path, problem: str) -> ValueError:
        return ValueError(f"{path}: damaged ({problem}) — {cls.RESTORE}")


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
