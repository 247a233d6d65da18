"""Predictors: what `fdl serve` serves — examples in, one output array out — and what classifiers' outputs mean.

`load_predictor(path)` reads a run directory (`RunPredictor`) or an `fdl export` folder
(`ExportPredictor`). Whether outputs are a classifier's logits is decided by the run's loss
(`classifier_head`) or, for an export, by its metadata.json; `answer` turns outputs into the
/predict answer: the outputs, and for a classifier probabilities and labels.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from fdl.config import ConfigError
from fdl.records import RunDir
from fdl.runs.export import METADATA_FILE, load_export
from fdl.runs.loaded import LoadedRun, load_run
from fdl.runs.saved import MODEL_FILE, SavedModel, load
from fdl.train import Evaluator
from fdl.train.evaluate import padded_batches

__all__ = ["Predictor", "RunPredictor", "ExportPredictor", "SavedPredictor", "answer", "classifier_head", "config_hash",
           "load_predictor"]

HEADS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}


class Predictor(Protocol):
    """What the server serves: examples in, one output array out.

    Attributes:
      input_shape: the shape of one raw example.
      input_dtype: what the model computes on ("float32"; an export of token ids "int32").
      head: "softmax" or "sigmoid" for a classifier (see `classifier_head`), None for raw outputs.
      class_names: a name per class, or None (labels are then indices).
      metadata: JSON-ready facts for /metadata: "source", "path", "config_sha256", ...
    """

    input_shape: tuple[int, ...]
    input_dtype: str
    head: str | None
    class_names: tuple[str, ...] | None
    metadata: dict

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs (n, ...) for raw examples x: (n, *input_shape) float32, eval mode."""


def classifier_head(config) -> str | None:
    """How a run's outputs become probabilities: the loss it minimized decides.

    "softmax" when it minimized `cross_entropy` (outputs are logits over the last
    axis; labels are their argmax), "sigmoid" for `binary_cross_entropy` (labels:
    logit > 0), None for any other loss or objective (outputs are served raw).
    The loss is `loss.name`, or the `loss` argument of the `supervised` objective.
    """
    objective = config.get("objective")
    if objective is None:
        return HEADS.get(config.loss.name)
    return HEADS.get(objective.args.get("loss", "cross_entropy")) if objective.name == "supervised" else None


class SizedPredict:
    """`Evaluator.predict` of a model at exactly the batch size it is called with: one Evaluator (one
    compiled forward pass, no padding) per size, kept. The server calls a few fixed sizes only."""

    def __init__(self, model):
        self.model, self._evaluators = model, {}

    def __call__(self, params, model_state, x: np.ndarray) -> np.ndarray:
        if len(x) not in self._evaluators:
            self._evaluators[len(x)] = Evaluator(self.model, batch_size=len(x))
        return self._evaluators[len(x)].predict(params, model_state, x)


class RunPredictor:
    """A run directory's model: `LoadedRun`'s preprocessing, then `Evaluator.predict` in eval mode.

    `run.evaluator` pads every call to `training.eval_batch_size` rows; the server pads
    to a few fixed sizes instead (`SizedPredict`).
    """

    input_dtype = "float32"  # LoadedRun.preprocess's

    def __init__(self, run: LoadedRun):
        dataset = run.arguments.data.dataset
        self.run, self.input_shape = run, run.require_one_input("fdl serve")
        self.head = classifier_head(run.config)
        self.class_names = tuple(dataset.class_names) if dataset.class_names else None
        self.metadata = {"source": "run", "path": str(run.run_dir.path), "checkpoint": run.checkpoint,
                         "config_sha256": config_hash(run.run_dir), "num_classes": dataset.num_classes}
        self._sized = SizedPredict(run.model)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs (n, ...) for raw examples x: (n, *input_shape), the run's preprocessing applied."""
        return self._sized(self.run.state.params, self.run.state.model_state, self.run.preprocess(x))


class ExportPredictor:
    """An `fdl export` folder's model (`fdl.runs.export.load_export`): preprocessing inside, no run needed.

    Its metadata.json decides the head: `"output_kind": "logits"` is served as a softmax
    classifier with its `class_names`, anything else raw. A fixed-batch export runs in
    chunks of its batch, the last padded by repeating a row.
    """

    def __init__(self, path: str | os.PathLike):
        self._predict, metadata = load_export(path)
        self.input_shape, self.input_dtype = tuple(metadata["input_shape"]), metadata["input_dtype"]
        self.head = "softmax" if metadata["output_kind"] == "logits" else None
        self.class_names = tuple(metadata["class_names"]) if metadata["class_names"] else None
        self._batch = None if metadata["batch"] == "dynamic" else metadata["batch"]
        self.metadata = {"source": "export", "path": str(path), "format": metadata["format"],
                         "export_batch": metadata["batch"], "config_sha256": metadata["config_sha256"],
                         "num_classes": metadata["num_classes"]}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs (n, ...) for raw examples x: (n, *input_shape)."""
        if self._batch is None:
            return self._predict(x)
        return np.concatenate([self._predict(rows)[mask] for rows, _, mask in padded_batches(x, None, self._batch)])


class SavedPredictor:
    """An `fdl.save` folder's model (`fdl.load`): its preprocessing, then `Evaluator.predict` in eval mode.

    A model saved with class names is served as a softmax classifier, any other raw;
    one compiled forward pass per batch size (`SizedPredict`), as `RunPredictor`.
    """

    def __init__(self, saved: SavedModel, path: str | os.PathLike):
        self.saved, self.input_shape, self.input_dtype = saved, tuple(saved.input_shape), saved.input_dtype
        self.head = "softmax" if saved.class_names else None
        self.class_names = saved.class_names
        self.metadata = {"source": "saved", "path": str(path), "config_sha256": saved.config_sha256,
                         "num_classes": None if saved.class_names is None else len(saved.class_names)}
        self._sized = SizedPredict(saved.model)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs (n, ...) for raw examples x: (n, *input_shape), the saved preprocessing applied."""
        return self._sized(self.saved.params, self.saved.model_state, self.saved.preprocess(x))


def config_hash(run_dir: RunDir) -> str | None:
    """env.json's `config_sha256` (the SHA-256 of config.yaml as trained), or None without env.json.

    Raises:
      ValueError: env.json is not a JSON object; the message names the file.
    """
    if not run_dir.env_path.is_file():
        return None
    try:
        environment = json.loads(run_dir.env_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{run_dir.env_path}: damaged ({error}) — {RunDir.RESTORE}") from None
    if not isinstance(environment, dict):
        raise ValueError(f"{run_dir.env_path}: damaged (not a JSON object) — {RunDir.RESTORE}")
    return environment.get("config_sha256")


def load_predictor(path: str | os.PathLike, checkpoint: str = "best") -> Predictor:
    """The Predictor of a run directory (its `checkpoint`: "best" or "last"), an `fdl export` folder or
    an `fdl.save` folder.

    Raises:
      ConfigError: `path` is neither, or the run's checkpoint cannot be loaded (`load_run`).
      FileNotFoundError, ValueError: the export's model file is missing or damaged (`load_export`).
    """
    folder = Path(path)
    if RunDir(folder).config_path.is_file():
        return RunPredictor(load_run(folder, checkpoint))
    if (folder / METADATA_FILE).is_file():
        return ExportPredictor(folder)
    if (folder / MODEL_FILE).is_file():
        return SavedPredictor(load(folder), folder)
    raise ConfigError(f"{str(folder)!r}: neither a run directory (no {RunDir.CONFIG}), an export (no "
                      f"{METADATA_FILE}) nor a saved model (no {MODEL_FILE}) — pass the folder `fdl train`, "
                      "`fdl export` or `fdl.save` wrote")


def answer(outputs: np.ndarray, head: str | None, class_names: tuple[str, ...] | None) -> dict:
    """The /predict answer for a Predictor's outputs (n, ...), as arrays with a row per example.

    Returns:
      {"outputs": outputs} for raw outputs (head None). A "softmax" classifier's
      outputs are logits (n, classes): "probabilities" (n, classes) their softmax,
      "labels" (n,) their argmax; a "sigmoid" one's are logits (n, ...):
      "probabilities" their logistic, "labels" 1 where a logit > 0, else 0. Labels
      are class names when `class_names` is given, else indices.
    """
    body = {"outputs": outputs}
    if head == "softmax":
        exp = np.exp(outputs - outputs.max(-1, keepdims=True))
        body.update(probabilities=exp / exp.sum(-1, keepdims=True), labels=outputs.argmax(-1))
    elif head == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-logit) overflows to inf for logit << 0: probability 0, exactly
            body.update(probabilities=1 / (1 + np.exp(-outputs)), labels=(outputs > 0).astype(np.int64))
    if head is not None and class_names is not None:
        body["labels"] = np.asarray(class_names)[body["labels"]]
    return body
