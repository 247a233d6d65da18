"""`fdl report`: the page of four shipped runs and a sweep, opened in headless Chromium; its errors.

The sweep directory is written by the sweep code's own writers (`driver.write_report` over an
Optuna study holding `member_record`s of two shipped runs' histories), not trained: a real
sweep costs more than this module's whole budget. One Chromium run (a screenshot and the DOM)
serves the module.
"""
import csv
import dataclasses
import html
import html.parser
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import optuna
import pytest

import fdl
from fdl.cli.main import main
from fdl.config import load_config, to_yaml
from fdl.config.schema import SweepConfig
from fdl.population.members import PopulationResult
from fdl.records import RunDir, SweepDir, read_jsonl, write_text
from fdl.records.report import flatten, read_dirs, read_run, render_report
from fdl.runs.report import write_report
from fdl.runs.sweep import driver, results
from fdl.runs.sweep.spec import group_points, parse_sweep

CHROMIUM = shutil.which("chromium")
RUNS = ("mlp", "cnn", "gru", "batchnorm")
SWEEP = """
name: fake_sweep
data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}
model: {name: mnist1d_mlp, args: {hidden: [16]}}
training: {epochs: 2, batch_size: 50, verbose: 0}
output: {plots: false}
sweep: {monitor: val_accuracy, params: {optimizer.learning_rate: [1e-3, 1e-2]}}
"""


def fake_sweep(folder, config_path, histories: list[list[dict]], tests: list[dict]) -> SweepDir:
    """A sweep directory as `fdl sweep` writes it, one seed per point, with the given members' numbers."""
    config = load_config(config_path)
    spec = parse_sweep(config)
    sweep_dir = SweepDir.new(folder)
    sweep_config = config.copy()  # sweep.yaml as driver.run_sweep writes it
    sweep_config.sweep = SweepConfig(**{**spec.to_plain(), "storage": None, "study": config.name})
    write_text(sweep_dir.sweep_path, to_yaml(sweep_config))
    points = [{"optimizer.learning_rate": value} for value in (1e-3, 1e-2)]
    group = group_points(points, spec, config)[0]
    study = optuna.create_study(direction="maximize")
    for point, history, test in zip(points, histories, tests):
        best = max(range(len(history)), key=lambda i: history[i]["val_accuracy"])
        result = PopulationResult(group.members[:1], [history], [best + 1], [history[best]], [history[-1]],
                                  [None], [False], None, None, "vmap", 1.5)
        trial = study.ask()
        results.record_trial(trial, point, [driver.member_record(result, 0, test, group)])
        study.tell(trial, history[best]["val_accuracy"])
    driver.write_report(driver.SweepResult(sweep_dir, [], [], None, None, "memory", config.name, 0),
                        study, spec, config, verbose=0)
    return sweep_dir


class Tables(html.parser.HTMLParser):
    """The tables of a page: attributes and rows of (tag, attributes, text) cells; also every img src."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.scripts, self.text, self._cell = [], [], 0, "", None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"attrs": attrs, "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append({"attrs": attrs, "cells": []})
        elif tag in ("td", "th") and self.tables:
            self._cell = [tag, attrs, ""]
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text += data
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1]["cells"].append(tuple(self._cell))
            self._cell = None

    def table(self, **attrs) -> dict:
        found = [t for t in self.tables if all(t["attrs"].get(k) == v for k, v in attrs.items())]
        assert len(found) == 1, f"{len(found)} tables with {attrs}"
        return found[0]


@pytest.fixture(scope="module")
def written(shipped_runs, tmp_path_factory):
    """(folder, report.html, sweep directory): `fdl report` of the four runs and a sweep."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "sweep.yaml").write_text(SWEEP)
    two = [shipped_runs["mlp"], shipped_runs["batchnorm"]]
    sweep_dir = fake_sweep(folder / "fake_sweep-sweep", folder / "sweep.yaml",
                           [read_jsonl(RunDir(p).metrics_path) for p in two], [RunDir(p).summary()["test"] for p in two])
    out = folder / "report.html"
    assert main(["report", *(str(shipped_runs[name]) for name in RUNS), str(sweep_dir.path), "--out", str(out)]) == 0
    return folder, out, sweep_dir


@pytest.fixture(scope="module")
def browser(written):
    """(the DOM Chromium built, the screenshot as an (h, w, 4) float array) of the report."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed — run .ci/services.sh as root (apt-get install chromium)")
    folder, out, _ = written
    shot = folder / "shot.png"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={folder / 'profile'}",
               f"--screenshot={shot}", "--window-size=1200,2000", "--dump-dom", out.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return Tables(done.stdout), matplotlib.image.imread(shot)


def test_the_screenshot_shows_every_runs_curves(browser):
    _, image = browser
    assert image.shape[:2] == (2000, 1200)
    rgb = np.round(image[..., :3] * 255)
    assert (rgb < 250).any(axis=-1).mean() > 0.03  # not a blank page
    # Each run's curves are drawn in its own colour of matplotlib's cycle (C0, C1, ...).
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)):
        assert (np.abs(rgb - colour).max(axis=-1) <= 8).sum() > 50, colour


def test_the_table_holds_every_run_with_its_summary(browser, shipped_runs):
    dom, _ = browser
    rows = dom.table(id="final-metrics")["rows"][1:]
    assert [row["attrs"]["data-run"] for row in rows] == list(RUNS)
    for name, row in zip(RUNS, rows):
        summary = RunDir(shipped_runs[name]).summary()
        cells = {attrs["data-key"]: (attrs.get("data-value"), text) for _, attrs, text in row["cells"][1:]}
        for split in ("train", "val", "test"):
            for metric, value in summary[split].items():
                assert cells[f"{split}.{metric}"] == (repr(value), f"{value:.4f}")
        assert cells["epochs"] == (repr(2.0), "2")


def test_the_config_keys_that_differ_are_the_shipped_configs_differences(browser, shipped_runs):
    dom, _ = browser
    rows = dom.table(id="config-diff")["rows"]
    assert [text for _, _, text in rows[0]["cells"]] == ["key", *RUNS]
    table = {row["cells"][0][2]: [text for _, _, text in row["cells"][1:]] for row in rows[1:]}
    # tests/conftest.py SHIPPED_CONFIGS: the four differ in name, model, preprocessing and folder only.
    assert set(table) == {"name", "output.dir", "data.preprocess", "model.name", "model.args", "model.args.hidden",
                          "model.args.channels", "model.layers"}
    assert table["name"] == [f"shipped_{name}" for name in RUNS]
    assert table["data.preprocess"] == ["standardize", "null", "null", "standardize"]
    assert table["model.args.hidden"] == ["[16]", "—", "4", "—"]
    assert table["output.dir"] == [str(shipped_runs[name]) for name in RUNS]


def test_a_confusion_matrix_counts_the_test_predictions(browser, shipped_runs):
    dom, _ = browser
    rows = dom.table(**{"class": "confusion", "data-run": "cnn"})["rows"][1:]
    shown = np.array([[int(text) for _, _, text in row["cells"][1:]] for row in rows])
    run = fdl.load_run(shipped_runs["cnn"])  # no preprocessing: the data's x are the raw inputs
    test = run.arguments.data.dataset.test
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (np.asarray(test.y), run.predict(test.x).argmax(-1)), 1)
    np.testing.assert_array_equal(shown, expected)


def test_the_sweep_shows_its_trials_and_best_point(browser, written):
    dom, _ = browser
    _, _, sweep_dir = written
    with open(sweep_dir.results_path, newline="") as file:
        reader = csv.DictReader(file)
        expected, columns = list(reader), reader.fieldnames
    table = dom.table(id="trials-fake_sweep-sweep")
    assert [text for _, _, text in table["rows"][0]["cells"]] == columns
    swept = [text for _, attrs, text in table["rows"][0]["cells"] if attrs.get("class") == "swept"]
    assert swept == ["optimizer.learning_rate"]
    for row, want in zip(table["rows"][1:], expected, strict=True):
        got = [attrs.get("data-value", text) for _, attrs, text in row["cells"]]
        assert got == [want[column] or "—" for column in columns]
    header = sweep_dir.best_path.read_text().splitlines()[0]
    assert header.startswith("# Best point of the sweep") and header.lstrip("# ") in dom.text


def test_the_page_loads_nothing_and_charts_each_logged_quantity(written, shipped_runs):
    _, out, _ = written
    text = out.read_text()
    page = Tables(text)
    assert page.scripts == 0 and "<link" not in text and "http://" not in text and "https://" not in text
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    logged = {key.removeprefix("val_") for row in read_jsonl(RunDir(shipped_runs["mlp"]).metrics_path)
              for key in row if key not in ("epoch", "step", "time_s", "steps_per_s")}
    assert logged == {"loss", "accuracy", "learning_rate"} and len(page.images) == len(logged)


def test_text_from_the_folders_is_escaped(tmp_path, shipped_runs):
    record = read_run(shipped_runs["mlp"])
    evil = "<script>alert('x')</script> & \"quoted\""
    records = [dataclasses.replace(record, history=[], config={**record.config, "name": evil}, note=evil),
               dataclasses.replace(read_run(shipped_runs["cnn"]), history=[])]
    text = render_report(records)
    page = Tables(text)
    assert page.scripts == 0 and text.count(html.escape(evil)) == 2  # the config cell and the note
    assert [row["cells"][1][2] for row in page.table(id="config-diff")["rows"] if row["cells"][0][2] == "name"] \
        == [evil]


def test_a_run_that_did_not_finish_shows_what_it_has(tmp_path, shipped_runs):
    partial = tmp_path / "killed"
    partial.mkdir()
    for name in (RunDir.CONFIG, RunDir.METRICS):  # no summary.json, no checkpoint
        shutil.copy(RunDir(shipped_runs["mlp"]).path / name, partial / name)
    out = write_report([partial], tmp_path / "report.html")
    page = Tables(out.read_text())
    row = page.table(id="final-metrics")["rows"][1]
    assert row["attrs"]["data-run"] == "killed"
    assert {text for _, _, text in row["cells"][1:]} == {"—"}
    assert "no confusion matrix:" in out.read_text() and "no checkpoint to load" in out.read_text()


def started_sweep(folder):
    """A sweep directory before its first results: sweep.yaml only."""
    write_text(SweepDir.new(folder).sweep_path, SWEEP)
    return folder


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", r"report: '.*missing' is not a folder — pass folders that `fdl train` or "
                                  r"`fdl sweep` wrote"),
    (lambda tmp: tmp, r"report: '.*' is neither a run directory \(no config.yaml\) nor a sweep directory "
                      r"\(no sweep.yaml\)"),
    (lambda tmp: started_sweep(tmp / "started"),
     r"sweep directory '.*' has no results.csv yet — let `fdl sweep` finish, or continue it with "
     r"`fdl sweep --resume"),
])
def test_a_folder_that_is_neither_is_named(tmp_path, make, message):
    with pytest.raises(FileNotFoundError, match=message):
        read_dirs([make(tmp_path)])


def test_a_folder_given_twice_or_none_is_refused(shipped_runs, capsys):
    with pytest.raises(ValueError, match=r"report: no folders given — pass run directories"):
        read_dirs([])
    path = str(shipped_runs["mlp"])
    assert main(["report", path, path + "/", "--out", "unused.html"]) == 2
    assert capsys.readouterr().err == f"fdl report: error: report: {path!r} is given twice — pass each folder " \
                                      "once\n"


def test_a_missing_matplotlib_is_named_with_its_extra(shipped_runs, monkeypatch):
    record = read_run(shipped_runs["mlp"])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    with pytest.raises(ImportError, match=r'^matplotlib is not installed — pip install "fdl\[records\]"'):
        render_report([record])


def test_flatten_gives_dotted_keys_with_lists_and_empty_mappings_as_leaves():
    assert flatten({"a": {"b": {"c": 1}, "d": [1, {"e": 2}], "f": {}}, "g": None}) == \
        {"a.b.c": 1, "a.d": [1, {"e": 2}], "a.f": {}, "g": None}
