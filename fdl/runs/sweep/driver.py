"""`run_sweep`: a config with a `sweep:` section -> trained populations -> a sweep directory.

    result = run_sweep("configs/mnist1d_mlp_sweep.yaml")           # one process, SQLite study
    run_sweep("configs/mnist1d_cnn_sweep.yaml", workers=2)          # + 1 worker subprocess
    run_sweep("c.yaml", storage="postgresql+psycopg2://u@db/s", study_name="cnn")  # one machine of many
    run_sweep(resume="runs/mnist1d_mlp_sweep-sweep-20261125-101500")

The sweep directory's files are those of `fdl.records.SweepDir`: the base
config with its resolved sweep section (`fdl sweep DIR/sweep.yaml` runs it
again), the default SQLite storage, and what `fdl.runs.sweep.results` writes.
Each group of points is trained with the arguments `fdl.config.build_arguments`
builds for `fdl train`, so a one-member sweep trains what `fdl train` trains.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import optuna
from omegaconf import DictConfig

from fdl.compilation import use_compilation_cache
from fdl.config import (ConfigError, RunArguments, build_arguments, build_data, check_population_keys,
                        load_config, to_yaml)
from fdl.config.schema import SweepConfig
from fdl.population import Population, PopulationResult
from fdl.records import SweepDir, write_text
from fdl.runs.sweep import results
from fdl.runs.sweep.search import make_storage, open_study, suggest_point, work
from fdl.runs.sweep.spec import Group, SweepSpec, group_points, initial_points, parse_sweep

__all__ = ["SweepResult", "TrialTrainer", "run_sweep", "write_report"]


@dataclasses.dataclass
class SweepResult:
    sweep_dir: SweepDir
    rows: list[dict]            # results.csv: one per member
    scores: list[dict]          # per point: trial, point, seeds, mean, std, pruned
    best: dict | None           # the best of `scores`
    best_config: DictConfig | None
    storage: str
    study_name: str
    trained: int                # trials this process trained


def member_record(result: PopulationResult, index: int, test: dict, group: Group) -> dict:
    """What a trial keeps of one member (its user attribute; results.csv is built from it)."""
    return {"seed": result.members[index].seed, "best_epoch": result.best_epoch[index],
            "stopped_epoch": result.stopped_epoch[index], "pruned": result.pruned[index],
            "best": result.best[index], "final": result.final[index], "test": test,
            "history": result.histories[index], "wall_time_s": result.wall_time_s,
            "population_size": len(result.members), "group": group.label, "strategy": result.strategy}


def _pruning(trials: list[optuna.Trial], owners: list[int], monitor: str):
    """on_epoch_end for train_population: reports each trial's mean monitored value over its
    active members, and stops every member of a trial its pruner prunes."""
    def on_epoch_end(epoch: int, logs: list[dict], active: np.ndarray) -> list[int]:
        stop = []
        for t, trial in enumerate(trials):
            live = [m for m, owner in enumerate(owners) if owner == t and active[m]]
            if live:
                trial.report(float(np.mean([logs[m][monitor] for m in live])), epoch)
                stop += live if trial.should_prune() else []
        return stop
    return on_epoch_end


class TrialTrainer:
    """Trains asked trials: their points grouped by program, one population per group.

    Owns what it builds: the prepared data per (data section, seed), and per
    group program the built arguments and the `Population` with its compiled
    programs, so the next batch of trials of a program compiles nothing new.
    """

    def __init__(self, spec: SweepSpec, config: DictConfig, verbose: int = 1):
        self.spec, self.config, self.verbose = spec, config, verbose
        self._data: dict[str, object] = {}
        self._programs: dict[str, tuple[RunArguments, Population]] = {}

    def __call__(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        points = [suggest_point(trial, self.spec) for trial in trials]
        for group in group_points(points, self.spec, self.config):
            ids = sorted(set(group.point_ids))
            self._train_group(group, [trials[i] for i in ids], [points[i] for i in ids],
                              [ids.index(i) for i in group.point_ids])

    def _program(self, group: Group) -> tuple[RunArguments, Population]:
        config = group.config
        data_key = to_yaml(config.data) + str(config.seed)
        if data_key not in self._data:
            self._data[data_key] = build_data(config.data, config.seed)
        program_key = json.dumps(group.overrides, sort_keys=True) + data_key
        if program_key not in self._programs:
            arguments = build_arguments(config, data=self._data[data_key])
            settings = arguments.population_arguments()
            population = Population(arguments.model, strategy=self.spec.strategy,
                                    max_members=self.spec.max_members,
                                    **{k: settings[k] for k in ("loss", "objective", "optimizer", "batch_size",
                                                                "metrics", "augment", "eval_batch_size", "mesh")
                                       if k in settings})
            self._programs[program_key] = arguments, population
        return self._programs[program_key]

    def _train_group(self, group: Group, trials: list[optuna.Trial], points: list[dict],
                     owners: list[int]) -> None:
        spec = self.spec
        arguments, population = self._program(group)
        settings, dataset = arguments.population_arguments(), arguments.data.dataset
        if self.verbose:
            print(f"population {group.label}: {len(group.members)} members "
                  f"({len(trials)} points x {spec.seeds} seeds), trials "
                  f"{[t.number for t in trials]}", flush=True)
        result = population.train(
            dataset.train, dataset.val, members=group.members, epochs=settings["epochs"],
            input_shape=settings["input_shape"], callbacks=settings["callbacks"], monitor=spec.monitor,
            mode=spec.mode,
            on_epoch_end=_pruning(trials, owners, spec.monitor) if spec.method == "optuna" else None,
            verbose=settings["verbose"] if self.verbose else 0)
        # result.states are what `fdl train` ends with for each member (its callbacks applied).
        tests = population.evaluate(result.states, dataset.test, input_shape=settings["input_shape"]) \
            if dataset.test is not None else [{} for _ in group.members]
        for t, (trial, point) in enumerate(zip(trials, points)):
            mine = [m for m, owner in enumerate(owners) if owner == t]
            kept = [member_record(result, m, tests[m], group) for m in mine]
            try:
                results.record_trial(trial, point, kept)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it as abandoned meanwhile: its retry counts, not this
            if any(result.pruned[m] for m in mine):
                trial.study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            else:
                value = float(np.mean([result.best[m][spec.monitor] for m in mine]))
                trial.study.tell(trial, value, skip_if_finished=True)


def _sweep_dir(config: DictConfig, out_dir: str | None) -> SweepDir:
    if out_dir is None:
        return SweepDir.create(config.output.base, config.name)
    try:
        return SweepDir.new(out_dir)
    except FileExistsError as error:
        raise ConfigError(f"--out: {error}, or continue that sweep with --resume {out_dir}") from None


def _load(config, overrides, resume) -> tuple[DictConfig, SweepDir | None]:
    """The sweep's config: from CONFIG (+ overrides), or from the sweep directory when resuming."""
    if resume is None:
        if config is None:
            raise ConfigError("fdl sweep: give a CONFIG file, or --resume DIR to continue a sweep")
        return (config if isinstance(config, DictConfig) else load_config(config, overrides)), None
    sweep_dir = SweepDir(resume)
    if config is not None or overrides:
        raise ConfigError(f"--resume {resume}: continues the sweep in {sweep_dir.sweep_path} as it was — "
                          "drop CONFIG and --set")
    if not sweep_dir.sweep_path.is_file():
        raise ConfigError(f"--resume {resume}: no {sweep_dir.sweep_path.name} there — pass a folder "
                          "`fdl sweep` made")
    return load_config(sweep_dir.sweep_path), sweep_dir


def _start_workers(count: int, sweep_dir: SweepDir, storage: str | None, study: str) -> list:
    """`count` worker processes (fdl.runs.sweep.worker) on the same study."""
    command = [sys.executable, "-m", "fdl.runs.sweep.worker", os.fspath(sweep_dir), "--study", study] + \
        (["--storage", storage] if storage else [])
    return [subprocess.Popen(command) for _ in range(count)]


def run_sweep(config: str | os.PathLike | DictConfig | None = None, *, out_dir: str | None = None,
              storage: str | None = None, study_name: str | None = None, workers: int = 1,
              resume: str | os.PathLike | None = None, overrides=(), report: bool = True,
              verbose: int = 1) -> SweepResult:
    """Runs (or joins, or resumes) a sweep and writes its directory.

    Args:
      config: a config path (or loaded DictConfig) with a `sweep:` section.
      out_dir: the sweep directory (default runs/<name>-sweep-<timestamp>).
      storage: an Optuna storage URL shared by workers (default sweep.storage, else
        SQLite study.db in the sweep directory); `journal:///path` for a journal file.
      study_name: the study (default sweep.study, else the config's name). Workers on
        other machines join with the same storage and study name.
      workers: processes on this machine, this one included (the others are
        `python -m fdl.runs.sweep.worker DIR` subprocesses).
      resume: a sweep directory to continue: its finished trials are kept.
      overrides: `--set KEY=VALUE` strings applied to the config.
      report: write results.csv, members/, best.yaml and plots (False: train only).
      verbose: 0 quiet, 1 a line per population and the engine's progress.

    Returns:
      a SweepResult. Raises ConfigError for every bad input (one line).
    """
    config, sweep_dir = _load(config, overrides, resume)
    spec = parse_sweep(config)
    check_population_keys(config)
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected at least 1")
    if workers > 1 and config.sweep.get("population_size") is None and spec.method != "optuna":
        spec = dataclasses.replace(spec, population_size=math.ceil(spec.num_samples / workers))
    storage, study_name = storage or spec.storage, study_name or spec.study or config.name
    if sweep_dir is None:
        sweep_dir = _sweep_dir(config, out_dir)
        sweep_config = config.copy()
        sweep_config.sweep = SweepConfig(**{**spec.to_plain(), "storage": storage, "study": study_name})
        write_text(sweep_dir.sweep_path, to_yaml(sweep_config))
    url = storage or sweep_dir.study_url
    use_compilation_cache()  # as `fdl train` does: the next worker, or a resumed sweep, loads the programs
    store = make_storage(url, spec)
    study = open_study(spec, config, store, study_name, initial_points(spec))
    children = _start_workers(workers - 1, sweep_dir, storage, study_name)
    try:
        trained = work(study, store, spec, TrialTrainer(spec, config, verbose))
    finally:
        failed = [child.wait() for child in children]
    if any(failed):
        print(f"fdl sweep: {sum(map(bool, failed))} worker process(es) failed; their trials were "
              "retried here", file=sys.stderr)
    result = SweepResult(sweep_dir, [], [], None, None, url, study_name, trained)
    return write_report(result, study, spec, config, verbose) if report else result


def write_report(result: SweepResult, study: optuna.Study, spec: SweepSpec, config: DictConfig,
                 verbose: int) -> SweepResult:
    """results.csv, members/, best.yaml and plots/ from the study; prints the summary table."""
    sweep_dir = result.sweep_dir
    rows, histories = results.collect(study)
    if not rows:
        raise ConfigError(f"study {result.study_name!r} has no finished trials — nothing to report")
    results.write_csv(sweep_dir.results_path, rows)
    results.write_member_logs(sweep_dir, histories)
    scores = results.point_scores(rows, spec)
    best = results.best_point(scores, spec)
    if best is not None:
        results.write_best(sweep_dir.best_path, config, best, spec, sweep_dir.path)
    if config.output.plots:
        results.plot_sweep(sweep_dir.plots_dir, rows, histories, scores, spec, study)
    if verbose:
        print(results.summary_table(scores, rows, spec))
    return dataclasses.replace(result, rows=rows, scores=scores, best=best,
                               best_config=results.best_config(config, best) if best else None)
