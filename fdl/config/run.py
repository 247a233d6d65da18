"""One training run from a config: build, fit, evaluate, and leave a complete run directory.

    result = train_from_config(load_config("configs/mnist1d_cnn.yaml"))

The run directory holds config.yaml (resolved), env.json, metrics.jsonl,
checkpoints/{best,last}.ckpt, preprocess.npz (when the data is preprocessed),
summary.json, plots/ and tensorboard/ (see fdl.records).
"""
from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path

import jax
import numpy as np
from omegaconf import DictConfig

from fdl import records
from fdl.config.build import (PreparedData, build_augment, build_callbacks, build_data, build_loss,
                              build_model, build_optimizer)
from fdl.config.load import ConfigError, load_config, to_yaml
from fdl.nn.core import Layer, ShapeError
from fdl.train import (NonFiniteLossError, TrainState, fit, init_train_state, load_checkpoint,
                       save_checkpoint)
from fdl.train.evaluate import evaluate_arrays
from fdl.train.fit import as_metrics, infer_num_classes, output_shape

CHECKPOINTS = "checkpoints"


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    state: TrainState
    history: list
    summary: dict


def check_model_fits_data(model: Layer, input_shape) -> tuple:
    """The model's output shape for the data's examples, or a ConfigError saying why not."""
    try:
        return output_shape(model, input_shape)
    except ShapeError as error:
        raise ConfigError(f"model: {error} (the data's examples have shape {tuple(input_shape)})") from None


CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "confusion_matrix", "roc_auc", "top")


def check_metrics(config: DictConfig) -> None:
    """A model that reconstructs its input gets no classification metric."""
    if config.data.target != "input":
        return
    wrong = [m for m in config.metrics if str(m).startswith(CLASSIFICATION_METRICS)]
    if wrong:
        raise ConfigError(f"metrics: {', '.join(wrong)} need class labels, but data.target is 'input' "
                          "(the model reconstructs its input) — use metrics: [mse, mae] or []")


def _open_run_dir(config: DictConfig) -> Path:
    if config.output.dir is None:
        return records.create_run_dir(config.output.base, config.name)
    path = Path(config.output.dir)
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"output.dir: {str(path)!r} already holds files — choose a new folder, "
                          "or leave output.dir unset for runs/<name>-<timestamp>")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save_preprocess(run_dir: Path, prepared: PreparedData) -> None:
    if prepared.stats is None:
        return
    buffer = io.BytesIO()
    np.savez(buffer, method=np.array(prepared.preprocess), **prepared.stats)
    records.write_bytes(run_dir / "preprocess.npz", buffer.getvalue())


def evaluate_splits(model: Layer, state: TrainState, prepared: PreparedData, config: DictConfig,
                    *, confusion: bool) -> dict[str, dict]:
    """Loss and the config's metrics (plus the confusion matrix when asked) on every split."""
    dataset = prepared.dataset
    num_classes = infer_num_classes(output_shape(model, dataset.feature_shape))
    names = list(config.metrics) + (["confusion_matrix"] if confusion else [])
    metrics = as_metrics(names, num_classes or (2 if dataset.num_classes == 2 else None))
    loss = build_loss(config.loss)
    return {name: evaluate_arrays(model, state.params, state.model_state, split.x, split.y, loss=loss,
                                  metrics=metrics, batch_size=config.training.eval_batch_size)
            for name, split in dataset.splits().items()}


def train_from_config(config: DictConfig, *, resume: str | os.PathLike | None = None) -> RunResult:
    """Trains the run `config` describes and writes its run directory.

    Args:
      config: a loaded config (`load_config`).
      resume: a run directory to continue: its checkpoints/last.ckpt is the
        starting state (exactly: the same batches and keys follow) and its
        files are extended; train up to `config.training.epochs`.

    Raises:
      ConfigError: a config section that cannot be built (one line, key path).
      NonFiniteLossError: after writing what the run had (the last finite state
        to checkpoints/last_finite.ckpt and summary.json with the error).
    """
    prepared = build_data(config.data, config.seed)
    dataset = prepared.dataset
    model = build_model(config.model)
    check_model_fits_data(model, dataset.feature_shape)
    check_metrics(config)
    loss, optimizer, augment = build_loss(config.loss), build_optimizer(config.optimizer), build_augment(config.data)
    state = None
    if resume is None:
        run_dir = _open_run_dir(config)
    else:
        run_dir = Path(resume)
        template = init_train_state(model, dataset.feature_shape, optimizer, config.seed)
        state, _ = load_checkpoint(run_dir / CHECKPOINTS / "last.ckpt", template)
    config_text = to_yaml(config)
    records.write_text(run_dir / "config.yaml", config_text)
    records.write_json(run_dir / "env.json", records.environment(config.seed, config_text))
    _save_preprocess(run_dir, prepared)
    callbacks = build_callbacks(config, str(run_dir / CHECKPOINTS)) + [
        records.RunRecorder(run_dir, tensorboard=config.output.tensorboard, plots=config.output.plots)]
    training = config.training
    start = time.perf_counter()
    try:
        state, history = fit(model, dataset.train, val=dataset.val, loss=loss, optimizer=optimizer,
                             epochs=training.epochs, batch_size=training.batch_size,
                             metrics=list(config.metrics), callbacks=callbacks, seed=config.seed,
                             augment=augment, state=state, fused=training.fused,
                             eval_batch_size=training.eval_batch_size, verbose=training.verbose)
    except NonFiniteLossError as error:
        save_checkpoint(run_dir / CHECKPOINTS / "last_finite.ckpt", error.state,
                        metadata={"epoch": error.epoch, "error": str(error)})
        records.write_json(run_dir / "summary.json", {"error": str(error), "epochs": len(error.history)})
        raise
    wall_time = time.perf_counter() - start
    summary = _write_summary(run_dir, config, model, state, prepared, history, wall_time)
    return RunResult(run_dir, state, history, summary)


def resume_run(run_dir: str | os.PathLike, overrides=()) -> RunResult:
    """Continues the run in `run_dir` from its last checkpoint (`fdl train --resume DIR`).

    `overrides` apply to its config.yaml, e.g. ["training.epochs=300"] to train longer.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINTS / "last.ckpt").is_file():
        raise ConfigError(f"--resume {str(run_dir)!r}: no checkpoints/last.ckpt — pass a run directory "
                          "written by `fdl train`")
    return train_from_config(load_config(run_dir / "config.yaml", overrides), resume=run_dir)


def _write_summary(run_dir: Path, config: DictConfig, model: Layer, state: TrainState,
                   prepared: PreparedData, history: list, wall_time: float) -> dict:
    """Evaluates every split, draws the confusion matrix, writes summary.json; returns it."""
    dataset = prepared.dataset
    classifier = dataset.num_classes is not None
    scores = evaluate_splits(model, state, prepared, config, confusion=classifier)
    if classifier and config.output.plots:
        shown = "test" if "test" in scores else "val" if "val" in scores else "train"
        records.plot_confusion_matrix(scores[shown].pop("confusion_matrix"),
                                      run_dir / "plots" / "confusion_matrix.png",
                                      class_names=dataset.class_names, title=f"{config.name} ({shown})")
    for split_scores in scores.values():
        split_scores.pop("confusion_matrix", None)
    train_seconds = sum(row["time_s"] for row in history)
    steps_per_epoch = len(dataset.train.x) // config.training.batch_size
    last_epoch = history[-1]["epoch"] if history else int(state.step) // steps_per_epoch
    summary = records.run_summary(scores, epochs=last_epoch, steps=last_epoch * steps_per_epoch,
                                  wall_time_s=wall_time, steps_per_s=len(history) * steps_per_epoch
                                  / train_seconds if train_seconds else 0.0)
    records.write_json(run_dir / "summary.json", summary)
    return summary


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best"):
    """(config, model, prepared data, state) of a finished run, for `fdl eval` and `fdl predict`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{str(run_dir)!r} is not an fdl run directory (no config.yaml) — pass the "
                          "folder `fdl train` printed")
    config = load_config(run_dir / "config.yaml")
    prepared = build_data(config.data, config.seed)
    model = build_model(config.model)
    template = init_train_state(model, prepared.dataset.feature_shape, build_optimizer(config.optimizer),
                                config.seed)
    path = run_dir / CHECKPOINTS / f"{checkpoint}.ckpt"
    if not path.is_file():
        path = run_dir / CHECKPOINTS / "last.ckpt"
    state, _ = load_checkpoint(path, template)
    state = jax.device_put(state)
    return config, model, prepared, state
