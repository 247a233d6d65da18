"""`fdl sweep` end to end on a tiny grid: the sweep directory, best.yaml retrained, resume, errors."""
import csv
import json

import matplotlib.image
import optuna
import pytest
from optuna.trial import TrialState

from fdl.cli.main import main
from fdl.config import load_config
from fdl.runs.sweep import driver as population_sweep

TINY = """
data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}
model: {name: mnist1d_mlp, args: {hidden: [8]}}
optimizer: {name: adam, learning_rate: 1e-2}
training: {epochs: 3, batch_size: 50, verbose: 0}
metrics: [accuracy]
output: {tensorboard: false}
sweep:
  seeds: 2
  monitor: val_accuracy
  params:
    optimizer.learning_rate: [1e-3, 1e-2]
    model.args.hidden: [[8], [16]]
"""


def read_rows(sweep_dir):
    with open(sweep_dir / "results.csv") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "tiny.yaml").write_text(TINY)
    assert main(["sweep", str(folder / "tiny.yaml"), "--out", str(folder / "out"), "--quiet"]) == 0
    return folder, folder / "out"


def test_results_csv_has_one_row_per_member(swept):
    _, out = swept
    rows = read_rows(out)
    assert len(rows) == 4 * 2
    points = {(r["optimizer.learning_rate"], r["model.args.hidden"]) for r in rows}
    assert points == {(lr, hidden) for lr in ("0.001", "0.01") for hidden in ("[8]", "[16]")}
    assert sorted(r["seed"] for r in rows) == ["0", "0", "0", "0", "1", "1", "1", "1"]
    for row in rows:
        assert row["state"] == "complete" and row["epochs"] == "3" and 1 <= int(row["best_epoch"]) <= 3
        assert 0 <= float(row["best_val_accuracy"]) <= 1 and 0 <= float(row["test_accuracy"]) <= 1
        assert float(row["best_val_accuracy"]) >= float(row["final_val_accuracy"])
        assert row["group"] == f"model.args.hidden={row['model.args.hidden']}"
        assert row["strategy"] in ("map", "vmap") and row["population_size"] == "4"
    history = [json.loads(line) for line in (out / "members" / "0.jsonl").read_text().splitlines()]
    assert [logs["epoch"] for logs in history] == [1, 2, 3]
    assert history[-1]["val_accuracy"] == pytest.approx(float(rows[0]["final_val_accuracy"]))


def test_plots_and_the_resolved_spec(swept):
    _, out = swept
    for name in ("learning_curves", "val_accuracy_vs_optimizer.learning_rate",
                 "val_accuracy_vs_model.args.hidden"):
        image = matplotlib.image.imread(out / "plots" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100
    config = load_config(out / "sweep.yaml")
    assert config.sweep.mode == "max" and config.sweep.population_size == 4
    assert config.sweep.params["model.args.hidden"] == {"choice": [[8], [16]]}


def test_best_yaml_is_a_config_fdl_train_reproduces(swept):
    folder, out = swept
    best = load_config(out / "best.yaml")
    assert best.sweep is None and best.seed == 0
    rows = read_rows(out)
    means = {}
    for row in rows:
        means.setdefault((row["optimizer.learning_rate"], row["model.args.hidden"]), []).append(
            float(row["best_val_accuracy"]))
    top = max(means, key=lambda k: sum(means[k]))
    assert (best.optimizer.learning_rate, list(best.model.args.hidden)) == (float(top[0]), json.loads(top[1]))
    assert main(["train", str(out / "best.yaml"), "--out", str(folder / "retrained"), "--quiet"]) == 0
    last = json.loads((folder / "retrained" / "metrics.jsonl").read_text().splitlines()[-1])
    (row,) = [r for r in rows if (r["optimizer.learning_rate"], r["model.args.hidden"]) == top and r["seed"] == "0"]
    assert last["val_loss"] == pytest.approx(float(row["final_val_loss"]), rel=1e-4)


def test_resume_continues_without_retraining_finished_trials(tmp_path, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("seeds: 2", "seeds: 1\n  population_size: 1").replace(
        "model.args.hidden: [[8], [16]]", "optimizer.b1: [0.8, 0.9]"))  # one program: compiles once
    calls = []
    original = population_sweep.TrialTrainer.__call__

    def interrupted(self, study, trials):
        calls.append([t.number for t in trials])
        if len(calls) == 3:
            raise KeyboardInterrupt
        original(self, study, trials)

    monkeypatch.setattr(population_sweep.TrialTrainer, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        population_sweep.run_sweep(config, out_dir=tmp_path / "out", verbose=0)
    monkeypatch.setattr(population_sweep.TrialTrainer, "__call__", original)
    result = population_sweep.run_sweep(resume=tmp_path / "out", verbose=0)
    assert result.trained == 2  # the interrupted trial (given back) and the one never started
    study = optuna.load_study(study_name="tiny", storage=result.storage)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    points = [json.dumps(t.user_attrs["fdl_point"], sort_keys=True) for t in complete]
    assert len(points) == 4 and len(set(points)) == 4
    assert len(read_rows(tmp_path / "out")) == 4
    assert main(["sweep", "--resume", str(tmp_path / "out"), "--quiet"]) == 0  # nothing left to do


CLI_ERRORS = [
    (["sweep", "{config}", "--set", "sweep.params={{optimizer.learnig_rate: [0.1]}}"],
     "fdl sweep: error: sweep.params.optimizer.learnig_rate: not a key of the base config — did you "
     "mean optimizer.learning_rate?"),
    (["sweep", "{config}", "--set", "sweep.method=bayes"], "fdl sweep: error: sweep.method: expected one"),
    (["sweep"], "fdl sweep: error: fdl sweep: give a CONFIG file, or --resume DIR"),
    (["sweep", "--resume", "{folder}"], "fdl sweep: error: --resume {folder}: no sweep.yaml there"),
    (["sweep", "{config}", "--resume", "{folder}"], "fdl sweep: error: --resume {folder}: continues the sweep"),
    (["sweep", "{config}", "--workers", "0"], "fdl sweep: error: --workers 0: expected at least 1"),
]


@pytest.mark.parametrize("argv, message", CLI_ERRORS, ids=[m[19:60] for _, m in CLI_ERRORS])
def test_bad_sweeps_exit_2_with_one_line(tmp_path, capsys, argv, message):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    names = {"config": config, "folder": tmp_path}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**names)) and err.count("\n") == 1
    assert not any(tmp_path.glob("runs*"))


def test_help_shows_an_example_of_each_form(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    for form in ("--workers", "--storage postgresql", "--storage journal:", "--study", "--resume", "--set", "--out"):
        assert form in text.split("examples:")[1]
