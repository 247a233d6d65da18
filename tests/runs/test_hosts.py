"""`fdl train --coordinator`: one run over several processes, its records, its collective checkpoints.

Real processes on 127.0.0.1, each with 2 simulated CPU devices (jax.distributed,
gloo collectives), sharing one run directory. The reference is one process with
4 devices; SGD, so the only differences are float rounding of the split sums.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import fdl
from fdl.cli.main import main
from fdl.records import read_jsonl

CONFIG = """
name: hosts
seed: 3
data: {name: mnist1d, limit_train: 384, val_fraction: 0.25, preprocess: standardize}
model: {layers: [Flatten, {Dense: {features: 16}}, BatchNorm, Relu, {Dense: {features: 10}}]}
optimizer: {name: sgd, learning_rate: 0.1}
training: {epochs: 8, batch_size: 16, verbose: 0}
callbacks: {checkpoint: {every_steps: 9}}
metrics: [accuracy]
output: {tensorboard: false, plots: false}
"""
TIMEOUT_S = 5  # --timeout: the heartbeat after which the survivors of a dead process stop


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fdl_train(config, out, devices: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, "-m", "fdl.cli.main", "train", str(config), "--out", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def processes(config, out, *extra: str) -> list[subprocess.Popen]:
    """Both processes of a 2-process job (2 devices each) training `config` into `out`."""
    coordinator = f"127.0.0.1:{free_port()}"
    return [fdl_train(config, out, 2, "--coordinator", coordinator, "--num-processes", "2", "--process-id",
                      str(i), "--timeout", str(TIMEOUT_S), *extra) for i in range(2)]


def finish(popen: subprocess.Popen) -> str:
    stdout, stderr = popen.communicate(timeout=600)
    assert popen.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"hosts": the 2-process run directory, "single": the 1-process 4-device one}, trained at once."""
    folder = tmp_path_factory.mktemp("hosts")
    (folder / "c.yaml").write_text(CONFIG)
    started = processes(folder / "c.yaml", folder / "hosts") + [
        fdl_train(folder / "c.yaml", folder / "single", 4, "--devices", "4")]
    for popen in started:
        finish(popen)
    return {"config": folder / "c.yaml", "hosts": folder / "hosts", "single": folder / "single"}


def params(run_dir) -> list[np.ndarray]:
    """The params of the run's last checkpoint, as numpy arrays."""
    return [np.asarray(leaf) for leaf in jax.tree.leaves(fdl.load_run(run_dir, "last").state.params)]


def test_two_processes_train_as_one_process_of_four_devices(runs):
    hosts, single = runs["hosts"], runs["single"]
    for a, b in zip(params(hosts), params(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for split in ("val", "test"):
        np.testing.assert_allclose(json.loads((hosts / "summary.json").read_text())[split]["loss"],
                                   json.loads((single / "summary.json").read_text())[split]["loss"], rtol=1e-5)


def test_only_process_0_writes_the_records(runs):
    rows = read_jsonl(runs["hosts"] / "metrics.jsonl")
    assert [row["epoch"] for row in rows] == list(range(1, 9))  # each epoch once, not once a process
    reference = read_jsonl(runs["single"] / "metrics.jsonl")
    np.testing.assert_allclose([row["val_loss"] for row in rows], [row["val_loss"] for row in reference],
                               rtol=1e-5)
    assert int((runs["hosts"] / ".lock").read_text() or 0) == 0  # released: its holder is gone


def test_a_killed_process_stops_the_other_and_the_job_resumes_to_the_same_numbers(runs, tmp_path):
    out = tmp_path / "killed"
    first, second = processes(runs["config"], out)
    checkpoints = out / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert time.monotonic() < deadline and first.poll() is None, "no checkpoint was written"
        time.sleep(0.05)
    second.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = first.communicate(timeout=TIMEOUT_S + 60)
    assert first.returncode != 0  # stopped by JAX: no hang, no silent success
    assert time.monotonic() - killed < TIMEOUT_S + 30
    assert "another task died" in stderr
    second.communicate()

    for popen in processes(runs["config"], out, "--resume", "auto"):  # the same command, on both hosts
        finish(popen)
    for a, b in zip(params(out), params(runs["hosts"])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [row["val_loss"] for row in read_jsonl(out / "metrics.jsonl")] == \
        [row["val_loss"] for row in read_jsonl(runs["hosts"] / "metrics.jsonl")]


@pytest.mark.parametrize("options, message", [
    (["--num-processes", "2"], "--num-processes and --process-id need --coordinator HOST:PORT"),
    (["--coordinator", "127.0.0.1:1"], "--coordinator 127.0.0.1:1: give --num-processes N and --process-id I"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0", "--devices", "2"],
     "--devices 2: with --coordinator the run spans every device of every process"),
])
def test_host_option_errors_name_the_option(options, message, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG)
    assert main(["train", str(tmp_path / "c.yaml"), *options]) == 2
    assert message in capsys.readouterr().err
