"""A run directory survives kills, full disks and a second process: its lock, leftovers and JSON lines."""
import errno
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fdl.io
from fdl.io import WriteError, append_jsonl, write_bytes
from fdl.records import RunRecorder, read_jsonl, write_text
from fdl.records.run_dir import RunDir, RunDirLockedError
from fdl.train.callbacks import Run

# A second process that holds the lock of the run directory argv[1] until its stdin closes.
HOLDER = """
import sys
from fdl.records.run_dir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Starts a process holding the lock of tmp_path/run; yields it, killed at the end."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "locked\n", process.stderr.read()
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_second_process_is_refused_the_lock_until_the_holder_dies(tmp_path, holder):
    run_dir = RunDir(tmp_path / "run")
    message = (f"run directory {str(run_dir.path)!r} is in use by process {holder.pid} (it holds "
               f"{run_dir.lock_path}) — wait for it to finish or pass another --out")
    with pytest.raises(RunDirLockedError, match=f"^{re.escape(message)}$"):
        with run_dir.lock():
            pass
    holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
    holder.wait()
    with run_dir.lock():
        assert run_dir.lock_path.read_text() == f"{os.getpid()}\n"
    assert run_dir.lock_path.read_text() == ""  # released: no pid left that no longer holds it


def test_the_lock_is_released_when_its_block_ends_and_refused_inside_it(tmp_path):
    run_dir = RunDir(tmp_path / "new" / "run")  # made with its parents
    with run_dir.lock() as locked:
        assert locked is run_dir
        with pytest.raises(RunDirLockedError, match=f"in use by process {os.getpid()} "):
            with RunDir(run_dir.path).lock():
                pass
    with run_dir.lock():
        pass


def _interrupted_write(path, monkeypatch) -> None:
    """Leaves the temporary file that a write_bytes killed before its rename leaves."""
    def killed(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed)
        patch.setattr(os, "unlink", lambda path: None)  # a killed process cleans nothing up
        with pytest.raises(KeyboardInterrupt):
            write_bytes(path, b"partial")


def test_remove_temporary_files_deletes_what_interrupted_writes_left_but_checkpoints(tmp_path, monkeypatch):
    run_dir = RunDir.new(tmp_path / "run")
    run_dir.write_config("seed: 0\n")
    for path in (run_dir.config_path, run_dir.plot("loss"), run_dir.checkpoints_dir / "3" / "state"):
        _interrupted_write(path, monkeypatch)
    kept = [run_dir.path / "notes.tmp", run_dir.path / ".x.tmp", run_dir.path / ".a.12.zzzzzzzz.tmp"]
    for path in kept:
        path.write_text("mine")
    config, = run_dir.path.glob(".config.yaml.*.tmp")
    plot, = run_dir.plots_dir.glob(".loss.png.*.tmp")
    checkpoint, = (run_dir.checkpoints_dir / "3").glob(".state.*.tmp")
    assert re.fullmatch(rf"\.config\.yaml\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", config.name)

    assert run_dir.remove_temporary_files() == [config, plot]
    assert not config.exists() and not plot.exists() and checkpoint.exists()
    assert all(path.read_text() == "mine" for path in kept)
    assert run_dir.config_text() == "seed: 0\n"
    assert run_dir.remove_temporary_files() == []


def _killed_start_up(path, monkeypatch) -> RunDir:
    """What `fdl train` leaves when it is killed before its first epoch ends (its files, made as it makes them)."""
    run_dir = RunDir.new(path)
    with run_dir.lock():
        run_dir.write_config("seed: 0\n")
        run_dir.write_env({"seed": 0})
        run_dir.write_preprocess("standardize", {"mean": np.zeros(3), "scale": np.ones(3)})
        recorder = RunRecorder(run_dir)
        recorder.on_train_begin(Run(model=None, state=None, epochs=1, steps_per_epoch=1))
        run_dir.checkpoints_dir.mkdir()
        _interrupted_write(run_dir.summary_path, monkeypatch)
    return run_dir


def test_new_reuses_a_folder_that_a_killed_start_up_left(tmp_path, monkeypatch):
    run_dir = _killed_start_up(tmp_path / "run", monkeypatch)
    run_dir.metrics_path.write_text("")
    names = {path.relative_to(run_dir.path).as_posix() for path in run_dir.path.rglob("*")}
    assert {".lock", "config.yaml", "env.json", "preprocess.npz", "metrics.jsonl", "plots", "checkpoints",
            "tensorboard"} < names and any(name.startswith("tensorboard/events.out.tfevents.") for name in names)

    reused = RunDir.new(run_dir.path)
    assert reused.path == run_dir.path
    assert sorted(path.relative_to(run_dir.path).as_posix() for path in run_dir.path.rglob("*")) == \
        [".lock", "checkpoints", "plots", "tensorboard"]


@pytest.mark.parametrize("record", ["metrics.jsonl", "summary.json", "checkpoints/3/state", "notes.txt",
                                    "plots/loss.png", "tensorboard/mine.txt", "data/x.npy"])
def test_new_refuses_a_folder_where_training_was_recorded(tmp_path, monkeypatch, record):
    run_dir = _killed_start_up(tmp_path / "run", monkeypatch)
    (run_dir.path / record).parent.mkdir(parents=True, exist_ok=True)
    (run_dir.path / record).write_text('{"epoch": 1}\n')
    before = sorted(run_dir.path.rglob("*"))
    message = f"run directory {str(run_dir.path)!r} already holds files — choose a new folder"
    with pytest.raises(FileExistsError, match=f"^{re.escape(message)}$"):
        RunDir.new(run_dir.path)
    assert sorted(run_dir.path.rglob("*")) == before  # nothing removed


def test_new_refuses_a_folder_whose_start_up_still_runs(tmp_path, monkeypatch):
    run_dir = _killed_start_up(tmp_path / "run", monkeypatch)
    with run_dir.lock():
        with pytest.raises(RunDirLockedError, match="is in use by process"):
            RunDir.new(run_dir.path)
    assert run_dir.config_text() == "seed: 0\n"


def test_append_jsonl_drops_a_line_cut_mid_way_before_appending(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    append_jsonl(path, {"epoch": 2, "loss": 0.5})
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2, "loss": 0.5}\n'
    path.write_text('{"epo')
    append_jsonl(path, {"epoch": 1})
    assert path.read_text() == '{"epoch": 1}\n'
    assert read_jsonl(path) == [{"epoch": 1}]


def test_rewrite_metrics_replaces_the_file_with_exactly_the_rows(tmp_path):
    run_dir = RunDir.new(tmp_path / "run")
    run_dir.metrics_path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epo')
    run_dir.rewrite_metrics([{"epoch": 1, "loss": np.float32(0.25)}, {"epoch": 2, "cm": np.eye(2, dtype=int)}])
    assert run_dir.metrics_path.read_text() == '{"epoch": 1, "loss": 0.25}\n{"epoch": 2, "cm": [[1, 0], [0, 1]]}\n'
    with pytest.raises(TypeError, match=r"metrics\.jsonl: to_python: cannot convert type object"):
        run_dir.rewrite_metrics([{"epoch": 1}, {"epoch": 2, "bad": object()}])
    assert [row["epoch"] for row in read_jsonl(run_dir.metrics_path)] == [1, 2]  # the old file stays
    run_dir.rewrite_metrics([])
    assert run_dir.metrics_path.read_text() == ""
    assert sorted(path.name for path in run_dir.path.iterdir()) == ["metrics.jsonl"]


FIXES = [(errno.ENOSPC, "free space on that disk"), (errno.EDQUOT, "free space within your disk quota"),
         (errno.EROFS, "remount that disk writable"), (errno.EACCES, "make that folder writable")]


@pytest.mark.parametrize("code,fix", FIXES)
def test_a_failing_write_names_the_file_the_cause_and_the_fix(tmp_path, monkeypatch, code, fix):
    path = tmp_path / "config.yaml"
    write_text(path, "old: 1\n")

    def failing_fsync(descriptor):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    message = f"could not write {path}: {os.strerror(code)} — {fix}, or write elsewhere"
    with pytest.raises(OSError, match=f"^{re.escape(message)}$") as raised:
        write_text(path, "new: 2\n")
    assert raised.value.errno == code and raised.value.filename == str(path)
    assert path.read_text() == "old: 1\n"
    assert os.listdir(tmp_path) == ["config.yaml"]  # no temporary file left


class _FullDisk:
    """An open file whose writes fail as on a full disk."""

    def __init__(self, file):
        self.file = file

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.file.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_append_jsonl_on_a_full_disk_names_the_file_and_keeps_the_lines_before(tmp_path, monkeypatch):
    path = tmp_path / "runs" / "x" / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    monkeypatch.setattr(fdl.io, "open", lambda *args, **kwargs: _FullDisk(open(*args, **kwargs)), raising=False)
    message = f"could not write {path}: No space left on device — free space on that disk, or write elsewhere"
    with pytest.raises(WriteError, match=f"^{re.escape(message)}$") as raised:
        append_jsonl(path, {"epoch": 2})
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)
    monkeypatch.undo()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"epoch": 1}]
    assert os.listdir(path.parent) == ["metrics.jsonl"]
