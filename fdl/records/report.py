"""`fdl report`'s page: runs and sweeps side by side in one self-contained HTML file.

This is the records layer's half: it reads what run and sweep directories hold
(through `RunDir` and `SweepDir`) and renders it. It loads no model and the page
loads nothing (no network, no script, no external CSS); the charts are
matplotlib PNGs embedded as data URIs. The page shows:

- the learning curves of every run overlaid, one chart per logged quantity
  (metrics.jsonl: train solid, val dashed; x is the epoch),
- the final metrics, one table row per run (summary.json: train, val, test),
- the config keys that differ between the runs (config.yaml as dotted keys),
- confusion matrices, rows the true class, columns the predicted one, when the
  caller gives them (`RunRecord.confusion`): computing one needs the model, so
  `fdl.runs.report` does it (load_run -> the test split -> fdl.metrics'
  confusion_matrix) and hands the records in; this module never imports fdl.runs,
- each sweep's trials (results.csv) and its best point (best.yaml).

All text from the folders is escaped (`html.escape`).

    records = read_dirs(["runs/mnist1d_mlp-20261125-101500", "runs/mnist1d_cnn-20261125-101700"])
    text = render_report(records)                        # the page as an HTML string
    write_report(["runs/a", "runs/b"], "report.html")    # both, without confusion matrices
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import yaml

from fdl.records.plots import _figure, as_scalar, history_series
from fdl.records.run_dir import RunDir, SweepDir, read_jsonl, write_text
from fdl.records.summary import SPLITS

__all__ = ["ConfusionMatrix", "RunRecord", "SweepRecord", "flatten", "read_run", "read_sweep", "read_dirs",
           "render_report", "write_report"]

_MISSING = "—"  # a table cell with no value


@dataclasses.dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of one split: matrix (classes, classes) int, rows the TRUE class, columns the PREDICTED one
    (fdl.metrics' confusion_matrix); `source` says what was evaluated (e.g. "test split, best checkpoint")."""

    matrix: np.ndarray
    source: str
    class_names: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What the report shows of one run directory.

    Attributes:
      run_dir: the RunDir.
      history: metrics.jsonl's rows, one per epoch ([] when there is none yet).
      summary: summary.json, or None (training did not finish).
      config: config.yaml as dotted keys (`flatten`).
      confusion: a confusion matrix to show, or None.
      note: why a part is missing (shown under the run's confusion matrix heading).
    """

    run_dir: RunDir
    history: list[dict]
    summary: dict | None
    config: dict[str, Any]
    confusion: ConfusionMatrix | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class SweepRecord:
    """What the report shows of one sweep directory: results.csv's columns and rows (text cells as
    written), the swept keys (sweep.yaml's sweep.params) and best.yaml's text (None without one)."""

    sweep_dir: SweepDir
    columns: list[str]
    rows: list[dict[str, str]]
    swept: list[str]
    best: str | None


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one dict of dotted keys; lists and scalars are leaves.

    Example:
      >>> flatten({"model": {"args": {"hidden": [16]}}, "seed": 0})
      {'model.args.hidden': [16], 'seed': 0}
    """
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_run(path: str | os.PathLike) -> RunRecord:
    """A run directory's history, summary and flattened config.

    Raises:
      FileNotFoundError: no config.yaml (not a run directory).
      ValueError: a damaged metrics.jsonl line (naming the file and line).
    """
    run_dir = RunDir.existing(path)
    history = read_jsonl(run_dir.metrics_path) if run_dir.metrics_path.is_file() else []
    summary = run_dir.summary() if run_dir.summary_path.is_file() else None
    config = flatten(yaml.safe_load(run_dir.config_text()) or {})
    note = "" if summary is not None else f"no {RunDir.SUMMARY}: the run did not finish"
    return RunRecord(run_dir, history, summary, config, note=note)


def read_sweep(path: str | os.PathLike) -> SweepRecord:
    """A sweep directory's results.csv, swept keys and best.yaml.

    Raises:
      FileNotFoundError: no results.csv (the sweep has not written its results yet).
    """
    sweep_dir = SweepDir(path)
    if not sweep_dir.results_path.is_file():
        raise FileNotFoundError(f"sweep directory {str(sweep_dir.path)!r} has no {SweepDir.RESULTS} yet — let "
                                f"`fdl sweep` finish, or continue it with `fdl sweep --resume {sweep_dir.path}`")
    with open(sweep_dir.results_path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    spec = yaml.safe_load(sweep_dir.sweep_path.read_text(encoding="utf-8")) or {}
    swept = list(((spec.get("sweep") or {}).get("params") or {}))
    best = sweep_dir.best_path.read_text(encoding="utf-8") if sweep_dir.best_path.is_file() else None
    return SweepRecord(sweep_dir, columns, rows, swept, best)


def read_dirs(paths: Iterable[str | os.PathLike]) -> list[RunRecord | SweepRecord]:
    """Each path read as a run directory (it has config.yaml) or a sweep directory (sweep.yaml), in order.

    Raises:
      ValueError: no paths, or a folder given twice.
      FileNotFoundError: a path that is neither (the message names it), or a sweep without results.
    """
    paths = [Path(path) for path in paths]
    if not paths:
        raise ValueError("report: no folders given — pass run directories (`fdl train`) or sweep "
                         "directories (`fdl sweep`), e.g. runs/*")
    seen = set()
    for path in paths:
        if path.resolve() in seen:
            raise ValueError(f"report: {str(path)!r} is given twice — pass each folder once")
        seen.add(path.resolve())
    return [_read_dir(path) for path in paths]


def _read_dir(path: Path) -> RunRecord | SweepRecord:
    if RunDir(path).config_path.is_file():
        return read_run(path)
    if SweepDir(path).sweep_path.is_file():
        return read_sweep(path)
    what = "is not a folder" if not path.is_dir() else \
        f"is neither a run directory (no {RunDir.CONFIG}) nor a sweep directory (no {SweepDir.SWEEP})"
    raise FileNotFoundError(f"report: {str(path)!r} {what} — pass folders that `fdl train` or `fdl sweep` wrote")


def write_report(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Reads the folders (`read_dirs`) and writes their page to `out` atomically; no confusion matrices
    (`fdl.runs.report.write_report` adds them). Returns `out` as a Path."""
    return write_text(out, render_report(read_dirs(paths)))


# ----------------------------------------------------------------------------- the page

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } th[scope=row], td.text { text-align: left; }
th.swept { background: #dde8f5; }
.scroll { overflow-x: auto; } .note { color: #666; }
figure { display: inline-block; margin: 0 16px 16px 0; }
table.confusion td { min-width: 2.2em; text-align: center; }
.matrix { display: inline-block; vertical-align: top; margin-right: 24px; }
pre { background: #f6f6f6; padding: 8px; }
"""


def render_report(records: list[RunRecord | SweepRecord]) -> str:
    """The whole page for `records` (from `read_dirs`, maybe with confusion matrices added) as HTML text.

    Runs and sweeps are labelled by the shortest path suffix that tells them apart (usually the folder name).
    """
    labels = _labels([_folder(record).path for record in records])
    runs = [(labels[i], r) for i, r in enumerate(records) if isinstance(r, RunRecord)]
    sweeps = [(labels[i], r) for i, r in enumerate(records) if isinstance(r, SweepRecord)]
    counts = ", ".join(f"{len(found)} {kind}{'' if len(found) == 1 else 's'}" for kind, found in
                       (("run", runs), ("sweep", sweeps)) if found)
    parts = [f"<h1>fdl report: {counts}</h1>"]
    if runs:
        parts += [_curves_section(runs), _final_section(runs), _config_section(runs), _confusion_section(runs)]
    if sweeps:
        parts.append('<section id="sweeps"><h2>Sweeps</h2>' + "".join(_sweep_html(*sweep) for sweep in sweeps)
                     + "</section>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>fdl report</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _folder(record: RunRecord | SweepRecord):
    return record.run_dir if isinstance(record, RunRecord) else record.sweep_dir


def _labels(paths: list[Path]) -> list[str]:
    """For each path the fewest trailing parts that no other path shares (at least the folder name)."""
    parts = [path.resolve().parts for path in paths]
    for depth in range(1, max(map(len, parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(path) for path in paths]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any, key: str) -> str:
    """The table cell of summary entry `key`: a number to 4 decimals with its exact value in data-value."""
    number = as_scalar(value)
    if number is None:
        return f'<td class="text" data-key="{_e(key)}">{_e(_MISSING if value is None else _text(value))}</td>'
    shown = str(value) if isinstance(value, int) else f"{number:.4f}"
    return f'<td data-key="{_e(key)}" data-value="{_e(repr(number))}">{_e(shown)}</td>'


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _table(table_id: str, header: list[str], rows: list[str], shaded: Iterable[str] = ()) -> str:
    """A scrollable table; the header cells named in `shaded` get class "swept"."""
    shaded = set(shaded)
    heads = "".join(f'<th class="swept">{_e(h)}</th>' if h in shaded else f"<th>{_e(h)}</th>" for h in header)
    return (f'<div class="scroll"><table id="{_e(table_id)}"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _curves_section(runs: list[tuple[str, RunRecord]]) -> str:
    """One chart per logged quantity with every run's train (solid) and val (dashed) curve."""
    series = [(label, history_series(record.history)) for label, record in runs]
    logged = dict.fromkeys(q for _, by_quantity in series for q in by_quantity)
    quantities = sorted(logged, key=lambda quantity: quantity != "loss")  # the loss first, then as logged
    if not quantities:
        return '<section id="curves"><h2>Learning curves</h2><p class="note">no epochs logged yet</p></section>'
    figures = [f'<figure data-quantity="{_e(q)}"><img alt="{_e(q)} per epoch" src="{_chart(q, series)}">'
               f"</figure>" for q in quantities]
    return ('<section id="curves"><h2>Learning curves</h2><p class="note">solid: train, dashed: val; '
            f"x: epoch</p>{''.join(figures)}</section>")


def _chart(quantity: str, series: list[tuple[str, dict]]) -> str:
    """The PNG data URI of one quantity's curves."""
    figure = _figure(4.6, 3.2)  # first: a missing matplotlib is named with its install hint
    from matplotlib.ticker import MaxNLocator

    axes = figure.add_subplot()
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    for index, (label, by_quantity) in enumerate(series):
        colour = f"C{index % 10}"
        for split, (epochs, values) in by_quantity.get(quantity, {}).items():
            axes.plot(epochs, values, color=colour, linestyle="-" if split == "train" else "--",
                      marker="o" if len(epochs) <= 30 else None, markersize=3,
                      label=f"{label} ({split})")
    axes.set_xlabel("epoch")
    axes.set_title(quantity.replace("_", " "))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _final_section(runs: list[tuple[str, RunRecord]]) -> str:
    """summary.json per run: epochs, then each split's scalar metrics, then the wall time."""
    summaries = [record.summary or {} for _, record in runs]
    keys = [("epochs", "epochs")]
    for split in SPLITS:
        metrics = dict.fromkeys(m for s in summaries for m, v in (s.get(split) or {}).items()
                                if as_scalar(v) is not None)
        keys += [(f"{split}.{metric}", f"{split} {metric}") for metric in metrics]
    keys.append(("wall_time_s", "wall time (s)"))
    rows = []
    for (label, record), summary in zip(runs, summaries):
        cells = "".join(_cell(_dotted(summary, key), key) for key, _ in keys)
        rows.append(f'<tr data-run="{_e(label)}"><th scope="row">{_e(label)}</th>{cells}</tr>')
    return ('<section id="final"><h2>Final metrics</h2><p class="note">summary.json of each run</p>'
            + _table("final-metrics", ["run"] + [title for _, title in keys], rows) + "</section>")


def _dotted(summary: dict, key: str) -> Any:
    split, _, metric = key.partition(".")
    return (summary.get(split) or {}).get(metric) if metric else summary.get(key)


def _config_section(runs: list[tuple[str, RunRecord]]) -> str:
    """The dotted config keys whose values are not the same in every run: one row per key."""
    configs = [record.config for _, record in runs]
    keys = dict.fromkeys(key for config in configs for key in config)
    missing = object()
    differing = [key for key in keys
                 if len({json.dumps(c.get(key, missing), sort_keys=True, default=repr) for c in configs}) > 1]
    if len(runs) < 2 or not differing:
        why = "one run: nothing to compare" if len(runs) < 2 else "every run has the same config"
        return f'<section id="config"><h2>Config keys that differ</h2><p class="note">{why}</p></section>'
    rows = ["<tr>" + f'<th scope="row">{_e(key)}</th>'
            + "".join(f'<td class="text">{_e(_text(c[key]) if key in c else _MISSING)}</td>' for c in configs)
            + "</tr>" for key in differing]
    return ('<section id="config"><h2>Config keys that differ</h2>'
            + _table("config-diff", ["key"] + [label for label, _ in runs], rows) + "</section>")


def _confusion_section(runs: list[tuple[str, RunRecord]]) -> str:
    parts = []
    for label, record in runs:
        if record.confusion is not None:
            parts.append(f'<div class="matrix"><h3>{_e(label)}</h3>{_confusion_table(label, record.confusion)}</div>')
        elif record.note:
            parts.append(f'<div class="matrix"><h3>{_e(label)}</h3><p class="note">{_e(record.note)}</p></div>')
    if not parts:
        return ""
    return ('<section id="confusion"><h2>Confusion matrices</h2><p class="note">rows: true class, columns: '
            "predicted class; shaded by the share of the row</p>" + "".join(parts) + "</section>")


def _confusion_table(label: str, confusion: ConfusionMatrix) -> str:
    matrix = np.asarray(confusion.matrix)
    names = confusion.class_names or tuple(str(i) for i in range(matrix.shape[0]))
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    rows = []
    for name, counts, shares in zip(names, matrix, matrix / totals):
        cells = "".join(f'<td style="background: rgba(31, 119, 180, {share:.3f}); color: '
                        f'{"#fff" if share > 0.6 else "#222"}">{int(count)}</td>'
                        for count, share in zip(counts, shares))
        rows.append(f'<tr><th scope="row">{_e(name)}</th>{cells}</tr>')
    heads = "".join(f"<th>{_e(name)}</th>" for name in names)
    return (f'<p class="note">{_e(confusion.source)}</p><div class="scroll"><table class="confusion" '
            f'data-run="{_e(label)}"><thead><tr><th>true \\ predicted</th>{heads}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _sweep_html(label: str, sweep: SweepRecord) -> str:
    """A sweep's trials table (results.csv as written; swept columns shaded) and best.yaml."""
    rows = []
    for row in sweep.rows:
        cells = "".join(_csv_cell(row.get(column)) for column in sweep.columns)
        rows.append(f'<tr data-member="{_e(row.get("member", ""))}">{cells}</tr>')
    table = _table(f"trials-{label}", sweep.columns, rows, sweep.swept)
    if sweep.best is None:
        best = f'<p class="note">no {SweepDir.BEST}: no trial finished with a finite score</p>'
    else:
        comments = [line.lstrip("# ") for line in sweep.best.splitlines() if line.startswith("#")]
        best = ("".join(f'<p class="best">{_e(line)}</p>' for line in comments)
                + f"<details><summary>{SweepDir.BEST}</summary><pre>{_e(sweep.best)}</pre></details>")
    return (f'<div class="sweep" data-sweep="{_e(label)}"><h3>{_e(label)}</h3>'
            f'<p class="note">{len(sweep.rows)} members ({SweepDir.RESULTS})</p>{table}'
            f"<h4>Best point</h4>{best}</div>")


def _csv_cell(text: str | None) -> str:
    """A results.csv cell: a number to 4 significant digits (the text in data-value), else the text."""
    if text is None or text == "":
        return f'<td class="text">{_MISSING}</td>'
    try:
        number = float(text)
    except ValueError:
        return f'<td class="text">{_e(text)}</td>'
    shown = text if text.lstrip("-").isdigit() else f"{number:.4g}"
    return f'<td data-value="{_e(text)}">{_e(shown)}</td>'
