"""One training run from a config: build, fit, evaluate, and leave a complete run directory.

    result = train_from_config(load_config("configs/mnist1d_cnn.yaml"))

The run directory's files are those of `fdl.records.RunDir`. Over several
processes (`jax.distributed`, `fdl train --coordinator`) every process trains
(one program over every process's devices) and shares one run directory,
`output.dir`, on a filesystem they all see: process 0 holds its lock and writes
the records (config, env, metrics, plots, summary); the checkpoints are written
by all together (orbax), and every process resumes from them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import jax
from omegaconf import DictConfig

from fdl import records
from fdl.compilation import CompileClock, use_compilation_cache
from fdl.config import ConfigError, RunArguments, build_arguments, load_config, to_yaml
from fdl.config.build import build_mlflow_logger
from fdl.data import as_examples
from fdl.metrics import get_metrics, infer_num_classes
from fdl.nn import output_shape
from fdl.records import RunDir
from fdl.runs.samples import write_samples
from fdl.config.resume import check_same_training, training_identity
from fdl.train import (CheckpointError, Evaluator, NonFiniteLossError, RunCheckpoints, TrainingInterrupted, TrainState,
                       fit, save_checkpoint)
from fdl.train.callbacks import ModelCheckpoint
from fdl.train.mesh import host_copy

__all__ = ["RunResult", "train_from_config", "resume_run", "split_evaluator", "evaluate_split"]


@dataclasses.dataclass
class RunResult:
    run_dir: RunDir
    state: TrainState
    history: list
    summary: dict


def split_evaluator(arguments: RunArguments, *, confusion: bool = False) -> Evaluator:
    """The Evaluator of a run's loss (or objective) and metrics (and the confusion matrix when asked)."""
    config, dataset = arguments.config, arguments.data.dataset
    num_classes = infer_num_classes(output_shape(arguments.model, dataset.feature_shape))
    names = list(config.metrics) + (["confusion_matrix"] if confusion else [])
    metrics = get_metrics(names, num_classes or (2 if dataset.num_classes == 2 else None))
    minimized = {"objective": arguments.objective} if arguments.objective is not None else {"loss": arguments.loss}
    return Evaluator(arguments.model, metrics=metrics, batch_size=config.training.eval_batch_size, **minimized)


def evaluate_split(evaluator: Evaluator, state: TrainState, split) -> dict:
    """Scores of `state` on one data split: (x, y) for a loss, the split's batch for an objective."""
    if evaluator.objective is not None:
        return evaluator.evaluate(state.params, state.model_state, as_examples(split), step=state.step)
    return evaluator.evaluate(state.params, state.model_state, split.x, split.y)


def _open_run_dir(config: DictConfig) -> RunDir:
    if config.output.dir is None:
        return RunDir.create(config.output.base, config.name)
    try:
        return RunDir.new(config.output.dir)
    except FileExistsError as error:
        raise ConfigError(f"output.dir: {error}, or leave output.dir unset for runs/<name>-<timestamp>") from None


def train_from_config(config: DictConfig, *, resume: str | os.PathLike | None = None) -> RunResult:
    """Trains the run `config` describes and writes its run directory.

    Args:
      config: a loaded config (`load_config`).
      resume: a run directory to continue from its newest good checkpoint
        (exactly: see `resume_run`); `config` must train what it trained.

    Raises:
      ConfigError: a config section that cannot be built (one line, key path).
      NonFiniteLossError: after writing what the run had (the last finite state
        to the last_finite checkpoint and the summary with the error).
    """
    started, clock = time.perf_counter(), CompileClock()
    use_compilation_cache()
    try:
        return _train(config, resume, started, clock)
    finally:
        clock.close()


def _train(config: DictConfig, resume, started: float, clock: CompileClock) -> RunResult:
    arguments = build_arguments(config)
    if jax.process_count() == 1:
        run_dir = _open_run_dir(config) if resume is None else RunDir(resume)
        with run_dir.lock():  # one process per run directory
            run_dir.remove_temporary_files()
            return _train_locked(config, arguments, run_dir, resume is not None, started, clock)
    if resume is None and config.output.dir is None:
        raise ConfigError(f"output.dir: {jax.process_count()} processes train one run — give them the same "
                          "--out, a folder on a filesystem every process sees")
    return _train_in_processes(config, arguments, resume, started, clock)


def _train_in_processes(config: DictConfig, arguments: RunArguments, resume, started: float,
                        clock: CompileClock) -> RunResult:
    """`_train` over several processes: process 0 opens and locks the run directory, then all train."""
    from jax.experimental.multihost_utils import sync_global_devices

    primary = jax.process_index() == 0
    sync_global_devices("fdl: every process has started")  # none reads the folder process 0 is making
    with contextlib.ExitStack() as held:
        if primary:
            run_dir = held.enter_context((_open_run_dir(config) if resume is None else RunDir(resume)).lock())
            run_dir.remove_temporary_files()
        sync_global_devices("fdl: the run directory is ready")
        run_dir = RunDir(resume or config.output.dir)
        return _train_locked(config, arguments, run_dir, resume is not None, started, clock)


def _train_locked(config: DictConfig, arguments: RunArguments, run_dir: RunDir, resume: bool, started: float,
                  clock: CompileClock) -> RunResult:
    dataset, fit_arguments = arguments.data.dataset, arguments.fit_arguments()
    primary = jax.process_index() == 0  # the one process that writes records
    settings = config.callbacks.checkpoint
    checkpoints = RunCheckpoints(run_dir.checkpoints_dir, keep=settings.keep)
    if resume:
        _check_resumable(config, run_dir, checkpoints)
    config_text = to_yaml(config)
    if primary:
        run_dir.write_config(config_text)
        run_dir.write_env(records.environment(config.seed, config_text))
        if arguments.data.stats is not None:
            run_dir.write_preprocess(arguments.data.preprocess, arguments.data.stats)
    else:
        fit_arguments["verbose"] = 0
    recorder = records.RunRecorder(run_dir, tensorboard=config.output.tensorboard, plots=config.output.plots,
                                   background=True)  # writes in process 0 only, as the MLflow logger
    mlflow_logger = build_mlflow_logger(config, run_name=run_dir.path.name, tags={
        "fdl.run_dir": str(run_dir.path.resolve()), "fdl.config_sha256": records.config_sha256(config_text)})
    fit_arguments["callbacks"] += [
        ModelCheckpoint(checkpoints, monitor=settings.monitor, mode=settings.mode, every=settings.every,
                        every_steps=settings.every_steps, every_seconds=settings.every_seconds, resume=resume,
                        metadata={"config": training_identity(config)}),
        recorder, *([mlflow_logger] if mlflow_logger else [])]
    fit_started = time.perf_counter()
    try:
        try:
            state, history = fit(arguments.model, dataset.train, val=dataset.val, **fit_arguments)
        except TrainingInterrupted as interrupt:
            interrupt.run_dir = run_dir.path  # for the command's "continue with" line
            raise
        except NonFiniteLossError as error:
            save_checkpoint(run_dir.checkpoint("last_finite"), error.state,
                            metadata={"epoch": error.epoch, "error": str(error)})
            if primary:
                run_dir.write_summary({"error": str(error), "epochs": len(error.history)})
            raise
        finally:
            checkpoints.close()
        if jax.process_count() > 1:
            state = host_copy(state)  # whole in every process: the evaluation below runs on its own devices
        timing = dict(first_step_s=fit_started - started + history.timing["first_step_s"],
                      train_s=history.timing["fit_s"] - history.timing["compile_s"],
                      records_s=history.timing["callbacks_s"])
        evaluated = time.perf_counter()
        summary_compile = clock.seconds()
        scores = _evaluate_splits(arguments, state, recorder)
        timing["eval_s"] = time.perf_counter() - evaluated - (clock.seconds() - summary_compile)
        written = time.perf_counter()
        if primary:
            write_samples(run_dir, arguments, state)  # samples.txt, with a sample: section
    finally:
        recorder.close()  # the plots drawn in the background
    timing["records_s"] += time.perf_counter() - written
    timing["compile_s"] = clock.seconds()
    summary = _summary(arguments, state, history, scores, time.perf_counter() - started, timing)
    if primary:
        run_dir.write_summary(summary)
    if mlflow_logger:
        mlflow_logger.log_summary(summary)
    return RunResult(run_dir, state, history, summary)


def _check_resumable(config: DictConfig, run_dir: RunDir, checkpoints: RunCheckpoints) -> None:
    """Refuses a config that trains something else than the newest readable checkpoint's run."""
    for step in reversed(checkpoints.steps()):
        try:
            saved = checkpoints.metadata(step)
        except CheckpointError:
            continue  # ModelCheckpoint names it when it falls back
        check_same_training(config, saved["run"]["config"], f"{run_dir.config_path} (with the --set overrides)")
        return


def resume_run(run_dir: str | os.PathLike, overrides=()) -> RunResult:
    """Continues the run in `run_dir` from its newest good checkpoint (`fdl train --resume DIR`).

    The result is that of the run never interrupted: the same batches, keys,
    callback decisions and records follow. `overrides` may change only what
    does not change the training (fdl.config.resume.RESUMABLE_KEYS), e.g.
    ["training.epochs=300"] to train longer. A run directory with no
    checkpoint yet (killed while starting) trains from the beginning.
    """
    try:
        run_dir = RunDir.existing(run_dir)
    except FileNotFoundError as error:
        raise ConfigError(f"--resume: {error}") from None
    return train_from_config(load_config(run_dir.config_path, overrides), resume=run_dir.path)


def _evaluate_splits(arguments: RunArguments, state: TrainState, recorder) -> dict:
    """Scores of every split; the confusion matrix of the shown split is drawn by `recorder`."""
    config, dataset = arguments.config, arguments.data.dataset
    classifier = dataset.num_classes is not None and arguments.objective is None
    evaluator = split_evaluator(arguments, confusion=classifier)
    scores = {name: evaluate_split(evaluator, state, split) for name, split in dataset.splits().items()}
    if classifier and recorder.plots:
        shown = "test" if "test" in scores else "val" if "val" in scores else "train"
        recorder.draw(records.plot_confusion_matrix, scores[shown].pop("confusion_matrix"),
                      recorder.run_dir.plot("confusion_matrix"), class_names=dataset.class_names,
                      title=f"{config.name} ({shown})")
    for split_scores in scores.values():
        split_scores.pop("confusion_matrix", None)
    return scores


def _summary(arguments: RunArguments, state: TrainState, history: list, scores: dict, wall_time: float,
             timing: dict) -> dict:
    """summary.json's content: the scores, the epochs and steps, and where the time went (seconds).

    timing: first_step_s (from the start of the run to its first training step),
    compile_s (tracing and compiling, or loading from the compilation cache),
    train_s (fit minus its compiling; validation runs inside each epoch's call),
    eval_s (the final evaluation of the splits, compiling excluded), records_s
    (callbacks, records and plots on the host; most of it overlaps training).
    """
    config, dataset = arguments.config, arguments.data.dataset
    steps_per_epoch = dataset.train.num_examples // config.training.batch_size
    last_epoch = history[-1]["epoch"] if history else int(state.step) // steps_per_epoch
    epochs_run = len(history)
    steady = [row["time_s"] for row in history[1:]] or [row["time_s"] for row in history]
    return records.run_summary(scores, epochs=last_epoch, steps=last_epoch * steps_per_epoch,
                               wall_time_s=wall_time,
                               steps_per_s=steps_per_epoch * len(steady) / sum(steady) if epochs_run else 0.0,
                               **{k: round(v, 4) for k, v in timing.items()})
