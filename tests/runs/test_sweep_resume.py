"""A whole `fdl sweep` SIGKILLed between its populations, then `fdl sweep --resume DIR`.

The grid (2 learning rates x 2 widths, 2 seeds each) trains as two populations,
one per width: trials 0 and 2 (hidden [8]) first, then trials 1 and 3 (hidden
[16]). The sweep is killed once the first population is told and the second
is training. The resumed sweep must keep the first population's trials as
they were (same numbers, completion times and member records; not trained
again), retrain the interrupted ones once, and end with the same results.csv
and members/ as an uninterrupted sweep of the same config: training is
deterministic on one machine. (The uninterrupted sweep runs first, so the
two runs after it load its programs from the session's compilation cache; the
programs are those of tests/runs/test_sweep.py's grid, which may have put them
there already.)

The heartbeat grace period is far longer than the test may take: the resumed
sweep must see that the killed process's trials are abandoned because that
process is gone, not wait for their heartbeats to go stale.
"""
import contextlib
import csv
import dataclasses
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from fdl.config import load_config
from fdl.runs.sweep import initial_points, parse_sweep, search

CONFIG = """
data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}
model: {name: mnist1d_mlp, args: {hidden: [8]}}
optimizer: {name: adam, learning_rate: 1e-2}
training: {epochs: 3, batch_size: 50, verbose: 0}
metrics: [accuracy]
output: {tensorboard: false, plots: false}
sweep:
  seeds: 2
  monitor: val_accuracy
  heartbeat_interval: 1
  grace_period: 300
  params:
    optimizer.learning_rate: [1e-3, 1e-2]
    model.args.hidden: [[8], [16]]
"""
FIRST_POPULATION = [0, 2]  # hidden [8]: grid order is learning rate slowest, width fastest
TIMEOUT_S = 120
FDL = os.path.join(os.path.dirname(sys.executable), "fdl")  # the installed command
RUN_DEPENDENT = ("trial", "wall_time_s", "worker")          # results.csv columns that name the run, not the numbers


def sweep(*arguments, log=None) -> subprocess.Popen:
    return subprocess.Popen([FDL, "sweep", *map(str, arguments)], stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> str:
    """The output of a sweep that must exit 0 within TIMEOUT_S (killed if it does not)."""
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"fdl sweep still running after {TIMEOUT_S} s:\n{output[-3000:]}") from None
    assert process.returncode == 0, output[-3000:]
    return output


def complete_trials(database) -> list[int]:
    """The numbers of the COMPLETE trials, read straight from the SQLite file while the sweep writes it."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as connection:
            return [n for n, in connection.execute("SELECT number FROM trials WHERE state = 'COMPLETE'")]
    except sqlite3.OperationalError:  # no file or no tables yet
        return []


def kill_after_first_population(tmp_path):
    """Starts the sweep, SIGKILLs it as soon as its first population is told; returns its folder."""
    out, log_path = tmp_path / "killed", tmp_path / "killed.log"
    with open(log_path, "w") as log:
        process = sweep(tmp_path / "sweep.yaml", "--out", out, log=log)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while len(complete_trials(out / "study.db")) < len(FIRST_POPULATION):
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.02)
        finally:
            process.kill()  # SIGKILL: no cleanup; its running trials stay RUNNING
            process.wait()
    return out


def snapshot(study: optuna.Study) -> dict:
    """Per trial number: state, value, completion time and what fdl recorded on it."""
    return {t.number: (t.state, t.value, t.datetime_complete, t.user_attrs.get("fdl_point"),
                       t.user_attrs.get("fdl_members")) for t in study.get_trials()}


def read_rows(out) -> list[dict]:
    with open(out / "results.csv") as file:
        return list(csv.DictReader(file))


def numbers_only(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in RUN_DEPENDENT} for row in rows]


def member_logs(out) -> list[list[dict]]:
    """members/<i>.jsonl in order, less the epoch times."""
    paths = sorted((out / "members").glob("*.jsonl"), key=lambda p: int(p.stem))
    assert [int(p.stem) for p in paths] == list(range(len(paths)))
    return [[{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in p.read_text().splitlines()]
            for p in paths]


def test_killed_sweep_resumes_without_losing_or_retraining_members(tmp_path):
    (tmp_path / "sweep.yaml").write_text(CONFIG)
    reference = tmp_path / "reference"  # first: the runs below load its programs from the compilation cache
    finished(sweep(tmp_path / "sweep.yaml", "--out", reference, "--quiet"))
    out = kill_after_first_population(tmp_path)
    url = f"sqlite:///{out / 'study.db'}"
    before = snapshot(optuna.load_study(study_name="sweep", storage=url))
    done = sorted(n for n, (state, *_) in before.items() if state == TrialState.COMPLETE)
    interrupted = sorted(n for n, (state, *_) in before.items() if state == TrialState.RUNNING)
    assert (done, interrupted) == (FIRST_POPULATION, [1, 3]), \
        f"the kill missed the second population: {before}\n{(tmp_path / 'killed.log').read_text()[-3000:]}"
    assert not (out / "results.csv").exists()  # the report comes at the end: the study holds what finished

    resumed = finished(sweep("--resume", out))
    study = optuna.load_study(study_name="sweep", storage=url)
    after = snapshot(study)
    # The first population's trials are untouched: same value, completion time and member records.
    assert {n: after[n] for n in done} == {n: before[n] for n in done}
    # The interrupted trials failed and were retried once each, as one population, on the same points.
    trained = [json.loads(numbers) for numbers in re.findall(r"^population .*trials (\[[\d, ]*\])$", resumed, re.M)]
    retries = {t.system_attrs["failed_trial"]: t for t in study.get_trials() if "failed_trial" in t.system_attrs}
    assert sorted(retries) == interrupted and trained == [sorted(t.number for t in retries.values())]
    for number in interrupted:
        assert after[number][0] == TrialState.FAIL
        assert retries[number].state == TrialState.COMPLETE
        assert retries[number].params == study.trials[number].params
    assert {t.state for t in study.get_trials()} == {TrialState.COMPLETE, TrialState.FAIL}

    rows = read_rows(out)
    members = [(r["optimizer.learning_rate"], r["model.args.hidden"], r["seed"]) for r in rows]
    assert len(rows) == 8 and len(set(members)) == 8  # every member exactly once
    kept = [r for r in rows if int(r["trial"]) in done]
    assert [float(r["best_val_accuracy"]) for r in kept] == [
        m["best"]["val_accuracy"] for n in done for m in before[n][4]]
    # Same numbers, in the same order, as the sweep that was never killed.
    assert numbers_only(rows) == numbers_only(read_rows(reference))
    assert member_logs(out) == member_logs(reference)
    # best.yaml: the same config under its two comment lines (which name the folder and trial)
    assert (out / "best.yaml").read_text().split("\n", 2)[2] == (reference / "best.yaml").read_text().split("\n", 2)[2]


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_trials_of_a_process_that_is_gone_are_retried_at_once(tmp_path, storage):
    """No training: three asked trials, held by a process that has exited, by a live one, and by
    a worker killed before it named itself. Only the first is failed and re-enqueued, long before
    the grace period, on a storage with heartbeats and on one without; the unnamed one after it."""
    (tmp_path / "sweep.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "sweep.yaml")
    spec = parse_sweep(config)
    url = f"sqlite:///{tmp_path}/study.db" if storage == "sqlite" else f"journal://{tmp_path}/study.log"
    store = search.make_storage(url, spec)
    study = search.open_study(spec, config, store, "s", initial_points(spec))
    gone, live = search._ask(study, store, 2, enqueued_only=True)
    with search.quiet_optuna():
        unnamed = study.ask()
    with subprocess.Popen(["sleep", "60"]) as exited, subprocess.Popen(["sleep", "60"]) as running:
        gone.set_user_attr(search.PROCESS_ATTR, search.process_identity(exited.pid))
        live.set_user_attr(search.PROCESS_ATTR, search.process_identity(running.pid))
        exited.kill()
        exited.wait()
        try:
            assert search.fail_abandoned_trials(study, store, spec) == 1
            states = [t.state for t in study.get_trials()]
            assert states[:3] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
            retry = study.trials[-1]
            assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == gone.number
            assert retry.params == study.trials[gone.number].params and "fixed_params" in retry.system_attrs
            assert search.PROCESS_ATTR not in retry.user_attrs and search.WORKER_ATTR not in retry.user_attrs
            assert search.fail_abandoned_trials(study, store, spec) == 0  # once
            # The unnamed trial is abandoned once it has gone a grace period without a name.
            assert search.fail_abandoned_trials(study, store, dataclasses.replace(spec, grace_period=0)) == 1
            assert study.trials[unnamed.number].state == TrialState.FAIL
            assert study.trials[live.number].state == TrialState.RUNNING
        finally:
            running.kill()
