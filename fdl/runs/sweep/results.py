"""What a sweep leaves on disk, read back from its Optuna study.

Each finished trial carries its point and its members' numbers as user
attributes (`record_trial`), so any worker, on any machine, writes the same
complete results from the study:

    results.csv         one row per member: trial, swept values, seed, state, best epoch,
                        final_<log>, best_<log>, test_<metric>, wall time, group, strategy,
                        worker (host:pid)
    members/<i>.jsonl   member i's per-epoch logs (i: the `member` column of results.csv)
    best.yaml           the best point as a config `fdl train` runs as is
    plots/              <monitor>_vs_<key>.png (mean ± std over seeds), learning_curves.png,
                        and for Optuna sweeps optimization_history.png, param_importances.png
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig

from fdl.config.load import to_yaml
from fdl.runs.sweep.search import FINISHED, WORKER_ATTR
from fdl.runs.sweep.spec import SweepSpec, Uniform, point_config
from fdl.io import write_jsonl
from fdl.records import SweepDir, write_bytes, write_text
from fdl.records.plots import as_scalar, require

MEMBERS_ATTR, POINT_ATTR = "fdl_members", "fdl_point"
__all__ = [
    "SKIPPED", "record_trial", "collect", "write_csv", "write_member_logs", "point_scores",
    "best_point", "best_config", "write_best", "plot_metric_vs_param", "plot_learning_curves",
    "plot_optuna", "plot_sweep", "summary_table",
]


SKIPPED = ("epoch", "step", "time_s")


def record_trial(trial: optuna.Trial, point: dict, members: list[dict]) -> None:
    """Stores a trained trial's point and per-member results (see `member_record`) on the trial."""
    trial.set_user_attr(POINT_ATTR, point)
    trial.set_user_attr(MEMBERS_ATTR, members)


def _scalars(prefix: str, logs: dict) -> dict:
    return {f"{prefix}{k}": as_scalar(v) for k, v in logs.items()
            if k not in SKIPPED and as_scalar(v) is not None}


def _cell(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def _queue_position(trial: optuna.trial.FrozenTrial) -> tuple[int, int]:
    """Where a trial sorts: at the number of the trial it retries (`retry_trial` records the
    first failed one), so a sweep killed and resumed lists its members as an uninterrupted one."""
    return trial.system_attrs.get("failed_trial", trial.number), trial.number


def collect(study: optuna.Study) -> tuple[list[dict], list[list[dict]]]:
    """(rows, histories): one row and one per-epoch history per member of every finished trial.

    Trials are in trial-number order (a retry in its failed original's place),
    members in seed order; a retried trial appears once (its failed copies are
    not finished).
    """
    rows, histories = [], []
    trials = sorted(study.get_trials(deepcopy=False, states=FINISHED), key=_queue_position)
    for trial in trials:
        point = trial.user_attrs.get(POINT_ATTR, {})
        for member in trial.user_attrs.get(MEMBERS_ATTR, []):
            row = {"member": len(rows), "trial": trial.number, "state": trial.state.name.lower(),
                   **{k: _cell(v) for k, v in point.items()}, "seed": member["seed"],
                   "best_epoch": member["best_epoch"], "epochs": len(member["history"]),
                   "stopped_epoch": member["stopped_epoch"], "pruned": member["pruned"],
                   **_scalars("best_", member["best"]), **_scalars("final_", member["final"]),
                   **_scalars("test_", member["test"]), "wall_time_s": member["wall_time_s"],
                   "population_size": member["population_size"], "group": member["group"],
                   "strategy": member["strategy"], "worker": trial.user_attrs.get(WORKER_ATTR)}
            rows.append(row)
            histories.append(member["history"])
    return rows, histories


def write_csv(path: Path, rows: list[dict]) -> Path:
    """The rows as CSV, columns in first-seen order (blank where a row lacks one)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def write_member_logs(sweep_dir: SweepDir, histories: list[list[dict]]) -> None:
    """Each member's per-epoch logs (SweepDir.member_path), each file replaced whole (atomically:
    a report killed half-way leaves every file either as it was or complete)."""
    for index, history in enumerate(histories):
        write_jsonl(sweep_dir.member_path(index), history)


def point_scores(rows: list[dict], spec: SweepSpec) -> list[dict]:
    """Per trial: {trial, point, seeds, mean, std, pruned} of its members' best monitored value."""
    key = f"best_{spec.monitor}"
    by_trial: dict[int, list[dict]] = {}
    for row in rows:
        by_trial.setdefault(row["trial"], []).append(row)
    scores = []
    for number, members in by_trial.items():
        values = np.array([m.get(key, math.nan) for m in members], float)
        scores.append({"trial": number, "point": {k: members[0][k] for k in spec.params},
                       "seeds": [m["seed"] for m in members], "mean": float(np.mean(values)),
                       "std": float(np.std(values)), "pruned": any(m["pruned"] for m in members)})
    return scores


def best_point(scores: list[dict], spec: SweepSpec) -> dict | None:
    """The unpruned trial with the best mean (by spec.mode), or None if none is finite."""
    candidates = [s for s in scores if not s["pruned"] and math.isfinite(s["mean"])] or \
        [s for s in scores if math.isfinite(s["mean"])]
    if not candidates:
        return None
    pick = min if spec.mode == "min" else max
    return pick(candidates, key=lambda s: s["mean"])


def _decoded(point: dict) -> dict:
    """CSV cells back to values: JSON text of list-valued choices becomes lists again."""
    def decode(value):
        if isinstance(value, str) and value[:1] in "[{":
            return json.loads(value)
        return value
    return {k: decode(v) for k, v in point.items()}


def best_config(config: DictConfig, best: dict) -> DictConfig:
    """The base config with the best point applied and its first member's seed: `fdl train` runs it."""
    point = _decoded(best["point"])
    config = point_config(config, {**point, "seed": min(best["seeds"])})
    config.output.dir = None
    return config


def write_best(path: Path, config: DictConfig, best: dict, spec: SweepSpec, sweep_dir: Path) -> Path:
    header = (f"# Best point of the sweep in {sweep_dir} (trial {best['trial']}): {spec.monitor} "
              f"{best['mean']:.4f} ± {best['std']:.4f} over seeds {best['seeds']}.\n"
              f"# fdl train {path} retrains its first member (seed {min(best['seeds'])}).\n")
    return write_text(path, header + to_yaml(best_config(config, best)))


# ----------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())


def plot_metric_vs_param(path: Path, key: str, scores: list[dict], spec: SweepSpec) -> Path:
    """The monitored value (mean ± std over seeds) of each point against one swept key."""
    figure = _figure(6.4, 4.0)
    axes = figure.add_subplot()
    values = [s["point"][key] for s in scores]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    labels = sorted({str(v) for v in values}) if not numeric else None
    for pruned, style in ((False, {"fmt": "o", "color": "C0", "label": "complete"}),
                          (True, {"fmt": "x", "color": "0.6", "label": "pruned"})):
        chosen = [s for s in scores if s["pruned"] == pruned]
        if chosen:
            xs = [s["point"][key] if numeric else labels.index(str(s["point"][key])) for s in chosen]
            axes.errorbar(xs, [s["mean"] for s in chosen], yerr=[s["std"] for s in chosen],
                          capsize=3, linestyle="none", **style)
    positive = numeric and min(values) > 0
    if positive and (isinstance(spec.params[key], Uniform) and spec.params[key].log
                     or max(values) > 20 * min(values)):
        axes.set_xscale("log")
    if labels:
        axes.set_xticks(range(len(labels)), labels)
    axes.set_xlabel(key)
    axes.set_ylabel(f"best {spec.monitor} (mean ± std over {spec.seeds} seeds)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)


def plot_learning_curves(path: Path, rows: list[dict], histories: list[list[dict]],
                         spec: SweepSpec) -> Path:
    """Every member's training loss and monitored value per epoch, one colour per point."""
    figure = _figure(11, 4.0)
    trials = sorted({row["trial"] for row in rows})
    colours = {t: f"C{i % 10}" for i, t in enumerate(trials)}
    for panel, quantity in enumerate(("loss", spec.monitor)):
        axes = figure.add_subplot(1, 2, panel + 1)
        for row, history in zip(rows, histories):
            epochs = [logs["epoch"] for logs in history]
            axes.plot(epochs, [logs.get(quantity, math.nan) for logs in history], color=colours[row["trial"]],
                      alpha=0.5, linewidth=1, linestyle="--" if row["pruned"] else "-")
        axes.set_xlabel("epoch")
        axes.set_ylabel(quantity)
        axes.set_title(f"{quantity} of {len(rows)} members (dashed: pruned)")
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def plot_optuna(folder: Path, study: optuna.Study) -> list[Path]:
    """Optuna's optimization history and parameter importances, where they can be drawn."""
    from optuna.visualization import matplotlib as optuna_plots

    import matplotlib.pyplot as pyplot

    paths = []
    for name, draw in (("optimization_history", optuna_plots.plot_optimization_history),
                       ("param_importances", optuna_plots.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw(study)
            figure = axes.figure
            figure.set_size_inches(7, 4.5)
            figure.tight_layout()
            paths.append(_save(figure, folder / f"{name}.png"))
            pyplot.close(figure)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # too few trials or params
            warnings.warn(f"sweep plots: skipped {name}.png ({error})", RuntimeWarning, stacklevel=2)
    return paths


def plot_sweep(folder: Path, rows: list[dict], histories: list[list[dict]], scores: list[dict],
               spec: SweepSpec, study: optuna.Study) -> list[Path]:
    """All of the sweep's plots (see the module docstring); returns the written paths."""
    paths = [plot_learning_curves(folder / "learning_curves.png", rows, histories, spec)]
    for key in spec.params:
        if len({json.dumps(s["point"][key]) for s in scores}) > 1:
            paths.append(plot_metric_vs_param(folder / f"{spec.monitor}_vs_{key}.png", key, scores, spec))
    if spec.method == "optuna":
        paths += plot_optuna(folder, study)
    return paths


# ----------------------------------------------------------------------------- summary table

def summary_table(scores: list[dict], rows: list[dict], spec: SweepSpec, limit: int = 10) -> str:
    """The best `limit` points as a plain-text table: swept values, mean ± std, test accuracy."""
    from rich.console import Console
    from rich.table import Table

    tests = [k for k in rows[0] if k.startswith("test_") and "loss" not in k][:1] if rows else []
    table = Table(title=f"sweep: {len(scores)} points, {len(rows)} members, by {spec.monitor}")
    for column in ["trial", *spec.params, f"{spec.monitor} (mean ± std)", *tests, "state"]:
        table.add_column(column)
    reverse = spec.mode == "max"
    ordered = sorted(scores, key=lambda s: (s["pruned"], -s["mean"] if reverse else s["mean"]))
    for score in ordered[:limit]:
        members = [r for r in rows if r["trial"] == score["trial"]]
        test = [f"{np.mean([m.get(tests[0], math.nan) for m in members]):.4f}"] if tests else []
        table.add_row(str(score["trial"]), *[str(score["point"][k]) for k in spec.params],
                      f"{score['mean']:.4f} ± {score['std']:.4f}", *test,
                      "pruned" if score["pruned"] else "complete")
    console = Console(file=io.StringIO(), width=140, force_terminal=False)
    console.print(table)
    return console.file.getvalue()
