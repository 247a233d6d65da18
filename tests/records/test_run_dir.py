"""Run directories never collide; writes are atomic; JSON lines round-trip."""
import json
import os
import re

import numpy as np
import pytest

from fdl.records import append_jsonl, create_run_dir, read_jsonl, write_json, write_text


def test_create_run_dir_names_by_time_and_never_reuses(tmp_path):
    paths = [create_run_dir(tmp_path / "runs", "mlp") for _ in range(4)]
    assert len(set(paths)) == 4
    assert all(path.is_dir() and path.parent == tmp_path / "runs" for path in paths)
    assert re.fullmatch(r"mlp-\d{8}-\d{6}", paths[0].name), paths[0].name
    # Within one second the suffixes count up; across a second boundary a new stem starts.
    for path in paths[1:]:
        assert re.fullmatch(r"mlp-\d{8}-\d{6}(-\d+)?", path.name), path.name


def test_create_run_dir_skips_an_existing_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda fmt: "20240102-030405")
    (tmp_path / "run-20240102-030405").mkdir()
    (tmp_path / "run-20240102-030405-2").mkdir()
    assert create_run_dir(tmp_path).name == "run-20240102-030405-3"
    assert create_run_dir(tmp_path).name == "run-20240102-030405-4"


def test_create_run_dir_rejects_a_path_as_name(tmp_path):
    with pytest.raises(ValueError, match="plain folder name.*base"):
        create_run_dir(tmp_path, "a/b")


def test_write_json_converts_numpy_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    write_json(path, {"a": np.float32(0.5), "b": np.arange(4).reshape(2, 2), "c": np.int64(3),
                      "d": [np.bool_(True)], "e": 1.25})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [[0, 1], [2, 3]], "c": 3, "d": [True],
                                            "e": 1.25}
    assert os.listdir(path.parent) == ["summary.json"]


def test_failed_write_json_keeps_the_previous_file(tmp_path):
    path = tmp_path / "env.json"
    write_json(path, {"version": 1})
    with pytest.raises(TypeError, match=r"env\.json.*cannot convert type object"):
        write_json(path, {"version": 2, "bad": object()})
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["env.json"]


def test_write_failing_midway_removes_its_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    write_text(path, "old: 1\n")

    def broken_fsync(descriptor):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_text(path, "new: 2\n")
    assert path.read_text() == "old: 1\n"
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_append_jsonl_round_trips(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"epoch": 1, "loss": 0.1 + 0.2, "cm": np.eye(2, dtype=np.int32)}, {"epoch": 2, "loss": np.float32(0.5)}]
    for row in rows:
        append_jsonl(path, row)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == [{"epoch": 1, "loss": 0.1 + 0.2, "cm": [[1, 0], [0, 1]]},
                                                    {"epoch": 2, "loss": 0.5}]


def test_read_jsonl_ignores_an_unterminated_last_line_and_names_a_broken_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 2: not JSON"):
        read_jsonl(path)
