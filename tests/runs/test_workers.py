"""Two `fdl sweep` workers share one study; one is SIGKILLed mid-population; the other finishes.

Every requested trial must end COMPLETE exactly once: the killed worker's
trials stop beating, are failed after the grace period and retried by the
survivor. Run on SQLite and on a throwaway PostgreSQL cluster (Debian's
`postgresql` package; .ci/services.sh installs it).
"""
import contextlib
import csv
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest
from optuna.trial import TrialState


LEARNING_RATES = [1e-3, 3e-3, 1e-2, 3e-2]
CONFIG = f"""
data: {{name: mnist1d, limit_train: 200, val_fraction: 0.25}}
model: {{name: mnist1d_mlp, args: {{hidden: [8]}}}}
optimizer: {{name: adam, learning_rate: 1e-2}}
training: {{epochs: 3, batch_size: 50, verbose: 0}}
metrics: [accuracy]
output: {{tensorboard: false, plots: false}}
sweep:
  population_size: 2
  heartbeat_interval: 1
  grace_period: 2
  params:
    optimizer.learning_rate: {LEARNING_RATES}
"""
TIMEOUT_S = 120
FDL = os.path.join(os.path.dirname(sys.executable), "fdl")  # the installed command


def start_worker(tmp_path, name: str, url: str) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "w")
    command = [FDL, "sweep", str(tmp_path / "sweep.yaml"), "--storage", url,
               "--study", "s", "--out", str(tmp_path / name), "--quiet"]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def trials_held_by(url: str, process: subprocess.Popen) -> list:
    """The RUNNING trials whose worker is `process` (fdl_worker attribute: host:pid)."""
    try:
        study = optuna.load_study(study_name="s", storage=url)
    except KeyError:  # not created yet
        return []
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("fdl_worker", "").endswith(f":{process.pid}")]


def kill_one_of_two_workers(tmp_path, url: str) -> None:
    (tmp_path / "sweep.yaml").write_text(CONFIG)
    doomed, survivor = start_worker(tmp_path, "doomed", url), start_worker(tmp_path, "survivor", url)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not trials_held_by(url, doomed):
            assert doomed.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "doomed.log").read_text()[-2000:]
            time.sleep(0.1)
        doomed.kill()  # SIGKILL: no cleanup, its trials stay RUNNING until they go stale
        doomed.wait()
        assert survivor.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "survivor.log").read_text()[-2000:]
    finally:
        for process in (doomed, survivor):
            if process.poll() is None:
                process.kill()
    check_every_trial_complete_once(tmp_path, url, doomed.pid, survivor.pid)


def check_every_trial_complete_once(tmp_path, url: str, killed_pid: int, survivor_pid: int) -> None:
    study = optuna.load_study(study_name="s", storage=url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    learning_rates = sorted(t.user_attrs["fdl_point"]["optimizer.learning_rate"] for t in complete)
    assert learning_rates == LEARNING_RATES  # each requested point complete, none twice
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # the killed worker's trials failed (a survivor's ask that found the queue empty also fails)
    assert any(t.user_attrs["fdl_worker"].endswith(f":{killed_pid}") for t in failed)
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.FAIL}
    with open(tmp_path / "survivor" / "results.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted(float(r["optimizer.learning_rate"]) for r in rows) == LEARNING_RATES
    assert {r["worker"].split(":")[1] for r in rows} <= {str(killed_pid), str(survivor_pid)}


def test_killed_worker_on_sqlite(tmp_path):
    kill_one_of_two_workers(tmp_path, f"sqlite:///{tmp_path}/study.db")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgresql_url():
    """A throwaway PostgreSQL cluster on a loopback port, as the `postgres` user when run as root."""
    pytest.importorskip("psycopg2", reason="psycopg2 not installed — pip install 'fdl[sweep]'")
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        pytest.skip("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin) — apt-get install postgresql")
    bin_dir = binaries[-1]
    folder = tempfile.mkdtemp(prefix="fdl-pg-")  # in /tmp: the postgres user can reach it
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data, run = os.path.join(folder, "data"), lambda *args: subprocess.run(
        as_user + list(args), check=True, capture_output=True, timeout=60)
    run(f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "-A", "trust")
    run(f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "fdl")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/fdl"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run(f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_killed_worker_on_postgresql(tmp_path, postgresql_url):
    kill_one_of_two_workers(tmp_path, postgresql_url)
