"""`run_sweep`: a config with a `sweep:` section -> trained populations -> a sweep directory.

    result = run_sweep("configs/mnist1d_mlp_sweep.yaml")           # one process, SQLite study
    run_sweep("configs/mnist1d_cnn_sweep.yaml", workers=2)          # + 1 worker subprocess
    run_sweep("c.yaml", storage="postgresql+psycopg2://u@db/s", study_name="cnn")  # one machine of many
    run_sweep(resume="runs/mnist1d_mlp_sweep-sweep-20261125-101500")

The sweep directory holds sweep.yaml (the base config with its resolved sweep
section: `fdl sweep DIR/sweep.yaml` runs it again), study.db (the default
storage), and what fdl.population.results writes: results.csv, members/,
best.yaml, plots/.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf

from fdl import records
from fdl.config.build import build_augment, build_data, build_loss, build_model, optimizer_arguments
from fdl.config.load import ConfigError, load_config, to_yaml
from fdl.config.run import check_model_fits_data
from fdl.population import results
from fdl.population.members import PopulationResult, evaluate_population, train_population
from fdl.population.search import make_storage, open_study, suggest_point, work
from fdl.population.spec import Group, SweepSpec, group_points, initial_points, parse_sweep

SWEEP_FILE, STUDY_FILE = "sweep.yaml", "study.db"
# `fdl` with this interpreter (`python -m fdl.cli.main` would import fdl.cli.main twice).
FDL_COMMAND = (sys.executable, "-c", "import sys; from fdl.cli.main import main; sys.exit(main())")


@dataclasses.dataclass
class SweepResult:
    sweep_dir: Path
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


@functools.lru_cache(maxsize=16)
def _program(model_yaml: str, loss_yaml: str, data_yaml: str) -> tuple:
    """(model, loss, augment) of config sections, built once per process: train_population's
    compiled programs are cached by these objects, so a later population (the next batch of
    trials, a resumed sweep) of the same program compiles nothing new."""
    model = build_model(OmegaConf.create(model_yaml))
    return model, build_loss(OmegaConf.create(loss_yaml)), build_augment(OmegaConf.create(data_yaml))


class TrialTrainer:
    """Trains asked trials: their points grouped by program, one train_population call per group."""

    def __init__(self, spec: SweepSpec, config: DictConfig, verbose: int = 1):
        self.spec, self.config, self.verbose = spec, config, verbose
        self._data: dict[str, object] = {}

    def __call__(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        points = [suggest_point(trial, self.spec) for trial in trials]
        for group in group_points(points, self.spec, self.config):
            ids = sorted(set(group.point_ids))
            self._train_group(group, [trials[i] for i in ids], [points[i] for i in ids],
                              [ids.index(i) for i in group.point_ids])

    def _dataset(self, config: DictConfig):
        key = to_yaml(config.data) + str(config.seed)
        if key not in self._data:
            self._data[key] = build_data(config.data, config.seed).dataset
        return self._data[key]

    def _built(self, group: Group, dataset) -> tuple:
        config = group.config
        model, loss, augment = _program(to_yaml(config.model), to_yaml(config.loss), to_yaml(config.data))
        check_model_fits_data(model, dataset.feature_shape)
        return model, loss, augment

    def _train_group(self, group: Group, trials: list[optuna.Trial], points: list[dict],
                     owners: list[int]) -> None:
        config, spec = group.config, self.spec
        dataset = self._dataset(config)
        model, loss, augment = self._built(group, dataset)
        if self.verbose:
            print(f"population {group.label}: {len(group.members)} members "
                  f"({len(trials)} points x {spec.seeds} seeds), trials "
                  f"{[t.number for t in trials]}", flush=True)
        result = train_population(
            model, dataset.train, dataset.val, members=group.members, loss=loss,
            optimizer=optimizer_arguments(config.optimizer), epochs=config.training.epochs,
            batch_size=config.training.batch_size, metrics=list(config.metrics), monitor=spec.monitor,
            mode=spec.mode, patience=spec.patience, strategy=spec.strategy, max_members=spec.max_members,
            on_epoch_end=_pruning(trials, owners, spec.monitor) if spec.method == "optuna" else None,
            augment=augment, eval_batch_size=config.training.eval_batch_size, verbose=self.verbose)
        # Test the state `fdl train` would end with: the best one only where the
        # config's early stopping restores it, the last one otherwise.
        stopping = config.callbacks.early_stopping
        tested = result.best_states if stopping.enabled and stopping.restore_best else result.states
        tests = evaluate_population(model, tested, dataset.test, loss=loss,
                                    metrics=list(config.metrics),
                                    batch_size=config.training.eval_batch_size) \
            if dataset.test is not None else [{} for _ in group.members]
        for t, (trial, point) in enumerate(zip(trials, points)):
            mine = [m for m, owner in enumerate(owners) if owner == t]
            kept = [member_record(result, m, tests[m], group) for m in mine]
            results.record_trial(trial, point, kept)
            if any(result.pruned[m] for m in mine):
                trial.study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            else:
                value = float(np.mean([result.best[m][spec.monitor] for m in mine]))
                trial.study.tell(trial, value, skip_if_finished=True)


def _sweep_dir(config: DictConfig, out_dir: str | None) -> Path:
    if out_dir is None:
        return records.create_run_dir(config.output.base, f"{config.name}-sweep")
    path = Path(out_dir)
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"--out {out_dir}: already holds files — choose a new folder, or continue "
                          f"that sweep with --resume {out_dir}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load(config, overrides, resume) -> tuple[DictConfig, Path | None]:
    """The sweep's config: from CONFIG (+ overrides), or from DIR/sweep.yaml when resuming."""
    if resume is None:
        if config is None:
            raise ConfigError("fdl sweep: give a CONFIG file, or --resume DIR to continue a sweep")
        return (config if isinstance(config, DictConfig) else load_config(config, overrides)), None
    if config is not None or overrides:
        raise ConfigError(f"--resume {resume}: continues the sweep in {resume}/{SWEEP_FILE} as it was — "
                          "drop CONFIG and --set")
    path = Path(resume) / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: no {SWEEP_FILE} there — pass a folder `fdl sweep` made")
    return load_config(path), Path(resume)


def _start_workers(count: int, sweep_dir: Path, storage: str | None, study: str) -> list:
    """`count` worker processes (`fdl sweep --resume DIR --worker`) on the same study."""
    command = [*FDL_COMMAND, "sweep", "--resume", str(sweep_dir), "--worker",
               "--quiet", "--study", study] + (["--storage", storage] if storage else [])
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
        `fdl sweep --resume DIR --worker` subprocesses).
      resume: a sweep directory to continue: its finished trials are kept.
      overrides: `--set KEY=VALUE` strings applied to the config.
      report: write results.csv, members/, best.yaml and plots (False: train only).
      verbose: 0 quiet, 1 a line per population and the engine's progress.

    Returns:
      a SweepResult. Raises ConfigError for every bad input (one line).
    """
    config, sweep_dir = _load(config, overrides, resume)
    spec = parse_sweep(config)
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected at least 1")
    if workers > 1 and config.sweep.get("population_size") is None and spec.method != "optuna":
        spec = dataclasses.replace(spec, population_size=math.ceil(spec.num_samples / workers))
    storage, study_name = storage or spec.storage, study_name or spec.study or config.name
    if sweep_dir is None:
        sweep_dir = _sweep_dir(config, out_dir)
        sweep_config = config.copy()
        sweep_config.sweep = {**spec.to_plain(), "storage": storage, "study": study_name}
        records.write_text(sweep_dir / SWEEP_FILE, to_yaml(sweep_config))
    url = storage or f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"
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
    results.write_csv(sweep_dir / "results.csv", rows)
    results.write_member_logs(sweep_dir / "members", histories)
    scores = results.point_scores(rows, spec)
    best = results.best_point(scores, spec)
    if best is not None:
        results.write_best(sweep_dir / "best.yaml", config, best, spec, sweep_dir)
    if config.output.plots:
        results.plot_sweep(sweep_dir / "plots", rows, histories, scores, spec, study)
    if verbose:
        print(results.summary_table(scores, rows, spec))
    return dataclasses.replace(result, rows=rows, scores=scores, best=best,
                               best_config=results.best_config(config, best) if best else None)
