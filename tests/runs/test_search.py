"""Optuna search: samplers and pruners by name, ask-and-tell with pruning of whole trials, journal storage."""
import json

import optuna
import pytest
from optuna.trial import TrialState

from fdl.config import load_config
from fdl.runs.sweep import parse_sweep, run_sweep, samplers, search

TINY = """
data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}
model: {name: mnist1d_mlp, args: {hidden: [8]}}
optimizer: {name: adam, learning_rate: 1e-2}
training: {epochs: 3, batch_size: 50, verbose: 0}
metrics: [accuracy]
output: {tensorboard: false}
sweep:
  method: optuna
  seeds: 2
  num_samples: 4
  monitor: val_accuracy
  pruner: odd_trials
  params:
    optimizer.learning_rate: {loguniform: [1e-3, 1e-1]}
    optimizer.b1: {uniform: [0.8, 0.95]}
"""


class OddTrialsPruner(optuna.pruners.BasePruner):
    """Prunes odd-numbered trials at their first report: a pruner whose choice a test can predict."""

    def prune(self, study, trial):
        return trial.number % 2 == 1


@pytest.fixture
def odd_trials_pruner(monkeypatch):
    monkeypatch.setattr(optuna.pruners, "OddTrialsPruner", OddTrialsPruner, raising=False)
    monkeypatch.setitem(samplers.PRUNERS, "odd_trials", "OddTrialsPruner")


def tiny(tmp_path, text=TINY):
    """The config of `text`, loaded from a file in tmp_path."""
    path = tmp_path / f"tiny-{len(list(tmp_path.glob('tiny-*')))}.yaml"
    path.write_text(text)
    return load_config(path)


def test_samplers_and_pruners_by_name(tmp_path):
    spec = parse_sweep(tiny(tmp_path, TINY.replace("pruner: odd_trials", "pruner: {name: threshold, lower: 0.2}")
                                        .replace("method: optuna", "method: optuna\n  sampler: {name: random}")))
    sampler, pruner = samplers.make_sampler(spec), samplers.make_pruner(spec)
    assert isinstance(sampler, optuna.samplers.RandomSampler) and isinstance(pruner, optuna.pruners.ThresholdPruner)
    first = [sampler.sample_independent(None, None, "x", optuna.distributions.FloatDistribution(0, 1))
             for _ in range(3)]
    again = samplers.make_sampler(spec)
    assert first == [again.sample_independent(None, None, "x", optuna.distributions.FloatDistribution(0, 1))
                     for _ in range(3)]  # seeded by sweep.sampler_seed
    assert isinstance(samplers.make_pruner(spec.__class__(**{**spec.__dict__, "method": "grid"})),
                      optuna.pruners.NopPruner)  # grid and random never prune


def test_optuna_prunes_whole_trials_and_tells_every_result(tmp_path, odd_trials_pruner):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    result = run_sweep(config, out_dir=tmp_path / "out", storage=f"journal:///{tmp_path}/study.log",
                       study_name="s", verbose=0)
    study = optuna.load_study(study_name="s", storage=search.make_storage(
        f"journal:///{tmp_path}/study.log", parse_sweep(load_config(tmp_path / "out" / "sweep.yaml"))))
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED, 2: TrialState.COMPLETE, 3: TrialState.PRUNED}
    assert len(result.rows) == 8
    for row in result.rows:
        pruned = row["trial"] % 2 == 1
        assert row["pruned"] is pruned and row["state"] == ("pruned" if pruned else "complete")
        assert row["epochs"] == (1 if pruned else 3) and row["stopped_epoch"] == (1 if pruned else None)
    for trial in study.get_trials():  # reported: the mean over the trial's 2 seeds
        members = [r for r in result.rows if r["trial"] == trial.number]
        assert list(trial.intermediate_values) == ([1] if trial.number % 2 else [1, 2, 3])
        last = max(trial.intermediate_values)
        assert trial.intermediate_values[last] == pytest.approx(sum(r["final_val_accuracy"] for r in members) / 2)
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(sum(r["best_val_accuracy"] for r in members) / 2)
        point = trial.user_attrs["fdl_point"]
        assert point == {"optimizer.learning_rate": trial.params["optimizer.learning_rate"],
                         "optimizer.b1": trial.params["optimizer.b1"]}
    assert result.best["trial"] in (0, 2)
    assert (tmp_path / "out" / "plots" / "optimization_history.png").is_file()
    assert (tmp_path / "out" / "plots" / "param_importances.png").is_file()


def test_a_study_holding_another_sweep_is_refused(tmp_path, odd_trials_pruner):
    config = tiny(tmp_path, TINY)
    spec = parse_sweep(config)
    storage = search.make_storage(f"sqlite:///{tmp_path}/db.sqlite", spec)
    search.open_study(spec, config, storage, "s", [])
    search.open_study(spec, tiny(tmp_path, TINY.replace("verbose: 0", "verbose: 2")), storage, "s", [])
    for change in (("seeds: 2", "seeds: 3"), ("epochs: 3", "epochs: 4")):
        other = tiny(tmp_path, TINY.replace(*change))
        with pytest.raises(search.ConfigError, match=r"^--study s: this study holds another sweep"):
            search.open_study(parse_sweep(other), other, storage, "s", [])


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_grid_points_are_enqueued_once_and_suggested_back(tmp_path):
    config = tiny(tmp_path, TINY.replace("method: optuna", "method: grid").replace(
        "{loguniform: [1e-3, 1e-1]}", "[1e-3, 1e-2]").replace("{uniform: [0.8, 0.95]}", "[0.9]")
        .replace("pruner: odd_trials", ""))
    spec = parse_sweep(config)
    points = [{"optimizer.learning_rate": lr, "optimizer.b1": 0.9} for lr in (1e-3, 1e-2)]
    storage = search.make_storage(f"sqlite:///{tmp_path}/db.sqlite", spec)
    first = search.open_study(spec, config, storage, "g", points)
    search.open_study(spec, config, storage, "g", points)  # a second worker joins: nothing enqueued again
    assert search.counts(first)[TrialState.WAITING] == 2
    asked = [first.ask() for _ in range(2)]
    assert [search.suggest_point(t, spec) for t in asked] == points
    assert json.loads(json.dumps(points)) == points
