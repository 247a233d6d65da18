"""`fdl train` resumes exactly, refuses what would train something else, and survives damage and signals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from fdl.config import ConfigError, load_config
from fdl.runs import resume_run, train_from_config

CONFIG = """
seed: 3
data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}
model: {name: mnist1d_mlp, args: {hidden: [16]}}
optimizer: {name: adam, learning_rate: 3e-2}
training: {epochs: 2, batch_size: 50, verbose: 0}
metrics: [accuracy]
callbacks: {checkpoint: {every_seconds: null}}
output: {tensorboard: false, plots: false}
"""
TIMING = ("time_s", "steps_per_s")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(CONFIG)
    return path


def train(config_file, out, *overrides):
    return train_from_config(load_config(config_file, [*overrides, f"output.dir={out}"]))


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.fixture(scope="module")
def straight(config_file, tmp_path_factory):
    """The uninterrupted 3-epoch run."""
    return train(config_file, tmp_path_factory.mktemp("straight") / "run", "training.epochs=3")


def assert_same_run(result, straight):
    assert without_timing(result.history) == without_timing(straight.history)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(result.state), jax.device_get(straight.state))
    assert result.summary["test"] == straight.summary["test"]
    lines = (result.run_dir.metrics_path).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_longer_resume_is_the_uninterrupted_run(config_file, tmp_path, straight):
    train(config_file, tmp_path / "run")
    assert_same_run(resume_run(tmp_path / "run", ["training.epochs=3"]), straight)


@pytest.mark.parametrize("damage", ["batch_size", "truncated", "edited"])
def test_a_resume_that_would_train_something_else_is_refused_naming_the_key(config_file, tmp_path, damage):
    train(config_file, tmp_path / "run")
    config_yaml, overrides = tmp_path / "run" / "config.yaml", ["training.epochs=3"]
    text = config_yaml.read_text()
    if damage == "batch_size":
        overrides.append("training.batch_size=25")
        expected = r"training.batch_size: 25 in .*config.yaml \(with the --set overrides\), 50 in the run being resumed"
    elif damage == "truncated":  # cut at a line end: still YAML, the rest filled with defaults
        config_yaml.write_text(text[: text.index("training:")])
        expected = r"training.batch_size: 32 in .*, 50 in the run being resumed"
    else:
        config_yaml.write_text(text.replace("learning_rate: 0.03", "learning_rate: 0.01"))
        expected = r"optimizer.learning_rate: 0.01 in .*, 0.03 in the run being resumed"
    with pytest.raises(ConfigError, match=expected + " — a resumed run trains as it began"):
        resume_run(tmp_path / "run", overrides)


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_a_damaged_newest_checkpoint_is_named_and_the_run_falls_back(config_file, tmp_path, straight, how):
    run = train(config_file, tmp_path / "run").run_dir
    newest = max((p for p in run.checkpoints_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    data = max((newest / "state" / "d").iterdir(), key=lambda p: p.stat().st_size)
    raw = data.read_bytes()
    if how == "flip":
        data.write_bytes(raw[:len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 1]) + raw[len(raw) // 2 + 1:])
    elif how == "truncate":
        data.write_bytes(raw[: len(raw) // 2])
    else:
        data.unlink()
    with pytest.warns(RuntimeWarning, match=rf"checkpoint '{newest}': .* — skipping it, trying an older one"):
        resumed = resume_run(run.path, ["training.epochs=3"])
    assert_same_run(resumed, straight)


def test_sigterm_checkpoints_and_says_how_to_resume_then_resume_auto_finishes(config_file, tmp_path):
    out = tmp_path / "run"
    command = [str(Path(sys.executable).with_name("fdl")), "train", str(config_file), "--out", str(out),
               "--resume", "auto", "--set", "training.epochs=300", "--set", "callbacks.checkpoint.every=1000"]
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
        assert process.poll() is None, process.communicate()
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    epoch = int(stderr.split("training stopped after epoch ")[1].split(";")[0])
    assert stderr.strip().splitlines()[-1] == (
        f"fdl train: SIGTERM received: training stopped after epoch {epoch}; checkpoint written — continue "
        f"with `fdl train --resume {out}`")
    assert epoch < 300 and [int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()] == [epoch * 3]
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert finished.returncode == 0, finished.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, 301))
