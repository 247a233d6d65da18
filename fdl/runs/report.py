"""`fdl report`'s gathering that needs models: each run's confusion matrix, then the page.

The page itself is `fdl.records.report` (pure: records in, HTML out). What it
cannot do there is evaluate a model, so here each classifier run is loaded
(`load_run`, its best checkpoint), its test split (val, or train, when it has
none) is evaluated with fdl.metrics' confusion_matrix, and the matrix is
handed to the page with the run's other records.

    write_report(["runs/mnist1d_mlp-20261125-101500", "runs/mnist1d_mlp_sweep-sweep-20261125-101900"],
                 "report.html")
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from fdl.config import ConfigError
from fdl.records import write_text
from fdl.records.report import ConfusionMatrix, RunRecord, read_dirs, render_report
from fdl.runs.loaded import load_run
from fdl.runs.train import evaluate_split, split_evaluator

__all__ = ["confusion_matrix", "write_report"]


def confusion_matrix(run_dir: str | os.PathLike, checkpoint: str = "best") -> ConfusionMatrix | None:
    """The run's confusion matrix on its test split (else val, else train); None for a model that does
    not classify (no class labels, or an `objective:` run).

    Raises:
      ConfigError: the run cannot be loaded (no checkpoint, a config this fdl cannot build).
    """
    run = load_run(run_dir, checkpoint)
    dataset = run.arguments.data.dataset
    if dataset.num_classes is None or run.arguments.objective is not None:
        return None
    splits = dataset.splits()
    split = next(name for name in ("test", "val", "train") if name in splits)
    scores = evaluate_split(split_evaluator(run.arguments, confusion=True), run.state, splits[split])
    names = tuple(map(str, dataset.class_names)) if dataset.class_names is not None else None
    return ConfusionMatrix(np.asarray(scores["confusion_matrix"]), f"{split} split, {run.checkpoint} checkpoint",
                           names)


def _with_confusion(record: RunRecord) -> RunRecord:
    """The record with its confusion matrix, or with a note saying why it has none."""
    try:
        matrix = confusion_matrix(record.run_dir.path)
    except ConfigError as error:
        return dataclasses.replace(record, note=f"no confusion matrix: {error}")
    return dataclasses.replace(record, confusion=matrix)


def write_report(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> Path:
    """`fdl report PATHS --out OUT`: the page of `fdl.records.report` with every run's confusion matrix.

    Every folder is checked before any model is loaded.

    Raises:
      FileNotFoundError: a path that is neither a run nor a sweep directory (naming it).
      ValueError: no paths, or one given twice.
    """
    records = [_with_confusion(r) if isinstance(r, RunRecord) else r for r in read_dirs(paths)]
    return write_text(out, render_report(records))
