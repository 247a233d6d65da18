"""The sweep's Optuna study: storage, sampler and pruner by name, and the worker loop.

Every sweep runs against one Optuna study; a trial is one point, trained with
`spec.seeds` members. Grid and random sweeps enqueue their points once (the
worker whose `create_study` succeeds does it), so any number of workers pull
from the same queue; Optuna sweeps ask the sampler for new points.

A worker (`work`) repeats: fail abandoned trials, ask up to `population_size`
trials, train them as populations (the `train` function it is given), tell
the results — until the study holds the requested number of COMPLETE or PRUNED
trials. A trial's heartbeat is recorded while it trains; a worker killed
mid-population stops beating, and after `grace_period` seconds any other
worker marks its trials FAIL and re-enqueues a copy with the same point
(`retry_trial`). Only COMPLETE and PRUNED trials count, so a finished trial is
never lost and never trained twice.

Each trial also names the process that holds it (`PROCESS_ATTR`: the machine's
boot, the pid namespace, the pid and its start time, read from Linux's /proc).
A worker on the same machine fails the RUNNING trials of a process that has
exited at once, without waiting for the grace period: so a whole sweep that was
killed and restarted with `fdl sweep --resume DIR` retrains its interrupted
trials straight away, on any storage.

Heartbeats need a database storage (`sqlite:///...`, `postgresql+psycopg2://...`,
`mysql+pymysql://...`): Optuna's journal storage (`journal:///path/to/file.log`)
shares work but has no heartbeat, so there only a worker on the same machine
(same boot) sees that a killed worker's trials are abandoned; those of a worker
killed on another machine stay RUNNING.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from fdl.config.load import ConfigError
from fdl.runs.sweep.samplers import make_pruner, make_sampler, quiet_optuna
from fdl.runs.sweep.spec import Choice, SweepSpec, encode_value

__all__ = [
    "MAX_RETRY", "READY_TIMEOUT_S", "FINISHED", "WORKER_ATTR", "PROCESS_ATTR", "make_storage",
    "has_heartbeat", "process_identity", "process_gone", "retry_trial", "fail_abandoned_trials",
    "encode_point", "suggest_point", "open_study", "counts", "heartbeat", "give_back", "work",
]


MAX_RETRY = 3           # a trial whose worker died this many times is given up
READY_TIMEOUT_S = 120   # how long a worker waits for the study's creator to enqueue its points
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR = "fdl_worker"   # host:pid of the worker that holds (held) a trial
PROCESS_ATTR = "fdl_process"  # process_identity() of that worker (boot/pid namespace/pid/start time)


# ----------------------------------------------------------------------------- worker processes

def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, *fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return None if state in ("Z", "X", "x") else fields[18]


@functools.cache
def _namespace() -> str | None:
    """This machine's boot and this process's pid namespace, or None where /proc cannot say (not Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def process_identity(pid: int | None = None) -> str | None:
    """`boot id/pid namespace/pid/start time` of a running process (default: this one), or None
    off Linux. Unlike host:pid it names one process: no other machine, container or later
    process with the same pid has the same identity."""
    pid = os.getpid() if pid is None else pid
    namespace, start = _namespace(), _start_time(pid)
    return None if namespace is None or start is None else f"{namespace}/{pid}/{start}"


def process_gone(identity: str | None) -> bool:
    """True when `identity` (see process_identity) is a process of this machine and pid
    namespace that no longer runs; False when it runs, or when this machine cannot tell."""
    parts = identity.split("/") if isinstance(identity, str) else []
    if len(parts) != 4 or not parts[2].isdigit() or _namespace() is None:
        return False
    boot, pid_namespace, pid, start = parts
    return f"{boot}/{pid_namespace}" == _namespace() and _start_time(int(pid)) != start


def make_storage(url: str, spec: SweepSpec) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL; `journal:///path` is a journal file, anything else a database.

    Database storages record heartbeats every `spec.heartbeat_interval` s and
    retry the trials of a worker silent for `spec.grace_period` s.
    """
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal://"):]))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):  # workers started together race to create the tables
        try:
            with quiet_optuna():
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=spec.heartbeat_interval,
                    grace_period=spec.grace_period,
                    heartbeat_stale_trial_callback=retry_trial)
        except Exception as error:  # noqa: BLE001 — sqlalchemy's errors vary by database
            if attempt == 4 or isinstance(error, (ImportError, ValueError)):
                raise ConfigError(f"--storage {url}: {str(error).splitlines()[0]}") from None
            time.sleep(0.5 + attempt)


def has_heartbeat(storage) -> bool:
    """True for a storage that records heartbeats (a database storage made by make_storage)."""
    return hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval() is not None


def encode_point(spec: SweepSpec, point: dict) -> dict:
    """A point as Optuna parameters (list-valued choices as JSON text)."""
    return {k: encode_value(v) if isinstance(spec.params[k], Choice) else v for k, v in point.items()}


def suggest_point(trial: optuna.Trial, spec: SweepSpec) -> dict:
    """The trial's point: each swept key suggested from its distribution (fixed if enqueued)."""
    return {key: dist.suggest(trial, key) for key, dist in spec.params.items()}


def open_study(spec: SweepSpec, config, storage, name: str, points: list[dict]) -> optuna.Study:
    """Creates the study (and enqueues `points`) or loads the one another worker created.

    `config` is the base config: its fingerprint with the spec's (see
    SweepSpec.fingerprint) must match the study's.

    Raises:
      ConfigError: the study `name` exists but holds another sweep.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {"storage": storage, "sampler": make_sampler(spec), "pruner": make_pruner(spec)}
    try:
        study = optuna.create_study(study_name=name, direction=spec.direction, **options)
    except optuna.exceptions.DuplicatedStudyError:
        return _wait_ready(optuna.load_study(study_name=name, **options), spec.fingerprint(config))
    study.set_user_attr("fdl_fingerprint", spec.fingerprint(config))
    study.set_user_attr("fdl_method", spec.method)
    for point in points:
        study.enqueue_trial(encode_point(spec, point))
    study.set_user_attr("fdl_ready", True)
    return study


def _wait_ready(study: optuna.Study, fingerprint: str) -> optuna.Study:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not study.user_attrs.get("fdl_ready"):
        if time.monotonic() > deadline:
            raise ConfigError(f"study {study.study_name!r}: its creator never finished enqueueing "
                              "its points — start the sweep under a new --study name")
        time.sleep(0.2)
    if study.user_attrs.get("fdl_fingerprint") != fingerprint:
        raise ConfigError(f"--study {study.study_name}: this study holds another sweep (another base "
                          "config, method, params or seeds) — choose a new --study name")
    return study


def counts(study: optuna.Study) -> dict[TrialState, int]:
    """How many of the study's trials are in each state."""
    tally = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        tally[trial.state] += 1
    return tally


@contextlib.contextmanager
def heartbeat(storage, trial_ids: list[int], interval: float):
    """Records the trials' heartbeats every `interval` s while the block runs (database storages)."""
    if not has_heartbeat(storage):
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(interval):
            for trial_id in trial_ids:
                storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name="fdl-sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _ask(study: optuna.Study, storage, count: int, enqueued_only: bool) -> list[optuna.Trial]:
    """Asks `count` trials, recording each one's first heartbeat at once.

    With `enqueued_only` (grid/random), a trial the sampler made because
    another worker emptied the queue first is failed and dropped.
    """
    trials, identity = [], process_identity()
    for _ in range(count):
        with quiet_optuna():
            trial = study.ask()
        # Trial has no public id; the storage API (heartbeats, get_trial) takes it.
        if has_heartbeat(storage):
            storage.record_heartbeat(trial._trial_id)
        if identity is not None:
            trial.set_user_attr(PROCESS_ATTR, identity)
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        if enqueued_only and "fixed_params" not in storage.get_trial(trial._trial_id).system_attrs:
            study.tell(trial, state=TrialState.FAIL)
            continue
        trials.append(trial)
    return trials


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Re-enqueues a failed trial's point, as Optuna's RetryHeartbeatStaleTrialCallback(MAX_RETRY)
    does (same system attributes: `failed_trial`, `retry_history`), less the attributes naming
    the process that held it: until a worker asks the copy, nobody holds it."""
    system_attrs = {"failed_trial": trial.number, "retry_history": [], **trial.system_attrs}
    system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
    if len(system_attrs["retry_history"]) > MAX_RETRY:
        return  # given up: its worker died MAX_RETRY times
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in (WORKER_ATTR, PROCESS_ATTR)}
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=trial.params,
                                        distributions=trial.distributions, user_attrs=user_attrs,
                                        system_attrs=system_attrs))


def give_back(study: optuna.Study, trials: list[optuna.Trial]) -> None:
    """Fails trials this worker cannot finish and re-enqueues their points for another worker."""
    for trial in trials:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
            retry_trial(study, study.tell(trial, state=TrialState.FAIL))


def _abandoned(trial: optuna.trial.FrozenTrial, grace_period: float) -> bool:
    """Whether no live worker holds this RUNNING trial: its process here has exited, or its worker
    died between asking it and naming itself (no name `grace_period` s after it started)."""
    holder = trial.user_attrs.get(PROCESS_ATTR)
    if holder is not None:
        return holder != process_identity() and process_gone(holder)
    if WORKER_ATTR in trial.user_attrs or trial.datetime_start is None:
        return False  # a worker without /proc: only its heartbeat tells
    return (datetime.datetime.now() - trial.datetime_start).total_seconds() > grace_period


def fail_abandoned_trials(study: optuna.Study, storage, spec: SweepSpec) -> int:
    """Fails and re-enqueues (`retry_trial`) the RUNNING trials no worker will finish.

    Those are the trials whose heartbeat went stale (database storages), and on
    any storage those of `_abandoned`: whose worker process on this machine
    has exited (a killed sweep, resumed at once), or that never got a worker's name.

    Returns:
      how many trials this call failed (not counting heartbeat-stale ones).
    """
    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)
    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _abandoned(trial, spec.grace_period):
            continue
        # Two workers may both see it: the storage lets one of them fail it.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                retry_trial(study, storage.get_trial(trial._trial_id))
                failed += 1
    return failed


def work(study: optuna.Study, storage, spec: SweepSpec,
         train: Callable[[optuna.Study, list[optuna.Trial]], None]) -> int:
    """One worker: asks, trains (`train(study, trials)` reports and tells) until the study is done.

    Returns:
      the number of trials this worker trained.
    """
    trained = 0
    while True:
        fail_abandoned_trials(study, storage, spec)
        tally = counts(study)
        finished = sum(tally[s] for s in FINISHED)
        waiting, running = tally[TrialState.WAITING], tally[TrialState.RUNNING]
        missing = max(spec.num_samples - finished - running - waiting, 0) if spec.method == "optuna" else 0
        count = min(spec.population_size, waiting + missing)
        if count == 0:
            if finished >= spec.num_samples or not (running and has_heartbeat(storage)):
                return trained
            time.sleep(min(spec.heartbeat_interval, 5))  # others' trials: finish or go stale
            continue
        trials = _ask(study, storage, count, enqueued_only=spec.method != "optuna")
        if not trials:
            continue
        try:
            with heartbeat(storage, [t._trial_id for t in trials], spec.heartbeat_interval):
                train(study, trials)
        except BaseException:
            give_back(study, trials)
            raise
        trained += len(trials)
