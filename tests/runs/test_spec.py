"""The sweep spec: parsing, every error, grid/random points and grouping into programs."""
import pytest
from omegaconf import OmegaConf

from fdl.config import ConfigError, build_optimizer, load_config
from fdl.config.load import merge_config
from fdl.population import MemberSpec
from fdl.runs.sweep import (Choice, IntRange, Uniform, grid_points, group_points,
                            groups, parse_sweep, random_points)
from fdl.runs.sweep.spec import initial_points

BASE = """
data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}
model: {name: mnist1d_mlp, args: {hidden: [8]}}
optimizer: {name: adam, learning_rate: 1e-2}
training: {epochs: 2, batch_size: 50, verbose: 0}
metrics: [accuracy]
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "base.yaml"
    path.write_text(BASE)
    return load_config(path)


def with_sweep(base, sweep, **changes):
    config = base.copy()
    for key, value in changes.items():
        OmegaConf.update(config, key, value, merge=False)
    return merge_config(config, {"sweep": sweep})


def test_defaults_and_distributions(base):
    spec = parse_sweep(with_sweep(base, {"params": {
        "optimizer.learning_rate": [1e-3, 1e-2],
        "model.args.hidden": {"choice": [[8], [16, 16]]},
        "training.batch_size": {"int": [25, 50, 25]},
        "model.args.dropout": [0.0, 0.1],          # a new key of the free-form model.args
    }}))
    assert (spec.method, spec.seeds, spec.monitor, spec.mode) == ("grid", 1, "val_loss", "min")
    assert spec.direction == "minimize" and spec.sampler == {"name": "tpe"}
    assert spec.params["optimizer.learning_rate"] == Choice((1e-3, 1e-2))
    assert spec.params["model.args.hidden"] == Choice(([8], [16, 16]))
    assert spec.params["training.batch_size"] == IntRange(25, 50, 25)
    assert spec.num_samples == spec.population_size == 2 * 2 * 2 * 2


def test_resolved_spec_reads_back_the_same(base):
    spec = parse_sweep(with_sweep(base, {
        "method": "optuna", "num_samples": 5, "monitor": "val_accuracy", "seeds": 3,
        "pruner": {"name": "threshold", "lower": 0.1},
        "params": {"optimizer.learning_rate": {"loguniform": [1e-4, 1e-1]},
                   "optimizer.b1": {"uniform": [0.8, 0.99]}, "model.args.hidden": [[8], [16]]}}))
    assert spec.mode == "max" and spec.population_size == 5 and spec.num_samples == 5
    assert spec.params["optimizer.learning_rate"] == Uniform(1e-4, 1e-1, log=True)
    assert parse_sweep(with_sweep(base, spec.to_plain())) == spec


ERRORS = [
    ({"metod": "grid"}, r"^sweep\.metod: unknown key — did you mean sweep\.method\?"),
    ({"method": "bayes"}, r"^sweep\.method: expected one of grid, random, optuna, got 'bayes'"),
    ({"params": {"optimizer.learnig_rate": [1e-3]}},
     r"^sweep\.params\.optimizer\.learnig_rate: not a key of the base config — did you mean "
     r"optimizer\.learning_rate\?"),
    ({"params": {"model.layers.0": [1]}}, r"^sweep\.params\.model\.layers\.0: not a key of the base config"),
    ({"params": {"sweep.seeds": [1, 2]}}, r"^sweep\.params\.sweep\.seeds: the sweep section itself"),
    ({"params": {"optimizer.learning_rate": []}}, r"optimizer\.learning_rate: empty list of values"),
    ({"params": {"optimizer.learning_rate": [1e-3, 1e-3]}}, r"learning_rate: values repeat"),
    ({"params": {"optimizer.learning_rate": 1e-3}}, r"learning_rate: expected a list of values or one of"),
    ({"method": "random", "params": {"optimizer.learning_rate": {"uniform": [0.5, 0.1]}}},
     r"learning_rate: uniform range has low 0\.5 > high 0\.1 — swap them"),
    ({"method": "random", "params": {"optimizer.learning_rate": {"uniform": [0.1, 0.1]}}},
     r"learning_rate: uniform range \[0\.1, 0\.1\] is empty"),
    ({"method": "random", "params": {"optimizer.learning_rate": {"loguniform": [0.0, 0.1]}}},
     r"learning_rate: loguniform range \[0\.0, 0\.1\] reaches zero or below"),
    ({"method": "random", "params": {"optimizer.learning_rate": {"loguniform": [-1e-3, 0.1]}}},
     r"loguniform range \[-0\.001, 0\.1\] reaches zero or below"),
    ({"method": "random", "params": {"optimizer.learning_rate": {"uniform": [0.1]}}},
     r"learning_rate: uniform expects \[low, high\] of numbers"),
    ({"params": {"training.batch_size": {"int": [16.5, 64]}}}, r"batch_size: int expects \[low, high\]"),
    ({"params": {"training.batch_size": {"int": [16, 64, 0]}}}, r"batch_size: int step must be >= 1"),
    ({"params": {"optimizer.learning_rate": {"lognormal": [1e-3, 1.0]}}},
     r"learning_rate: unknown distribution 'lognormal' — did you mean loguniform\? valid: choice"),
    ({"params": {"optimizer.learning_rate": {"loguniform": [1e-4, 1e-1]}}},
     r"^sweep\.params\.optimizer\.learning_rate: loguniform: grid search needs values"),
    ({"params": {"training.batch_size": [32.5]}},
     r"^sweep\.params\.training\.batch_size: Value '32\.5' of type 'float' could not be converted"),
    ({"params": {"optimizer.momentum": [0.9]}},
     r"^sweep\.params\.optimizer\.momentum: optimizer: unknown optimizer 'adam' hyperparameter 'momentum'"),
    ({"params": {"model.args.hiden": [[8]]}}, r"^sweep\.params\.model\.args\.hiden: model\.args"),
    ({"method": "optuna", "sampler": "tpee", "params": {"optimizer.learning_rate": [1e-3, 1e-2]}},
     r"^sweep\.sampler: unknown sampler 'tpee' — did you mean 'tpe'\?"),
    ({"method": "optuna", "pruner": "medain", "params": {"optimizer.learning_rate": [1e-3, 1e-2]}},
     r"^sweep\.pruner: unknown pruner 'medain' — did you mean 'median'\?"),
    ({"pruner": {"name": "threshold", "uper": 1.0}},
     r"^sweep\.pruner: unknown threshold argument 'uper' — did you mean 'upper'\?"),
    ({"pruner": {"name": "threshold"}}, r"^sweep\.pruner: ThresholdPruner: "),
    ({"sampler": 3}, r"^sweep\.sampler: expected a name or \{name: \.\.\., <arguments>\}, got 3"),
    ({"method": "optuna"}, r"^sweep\.params: optuna needs at least one swept key"),
    ({"monitor": "val_acc"}, r"^sweep\.monitor: 'val_acc' is not logged — did you mean val_accuracy\?"),
    ({"mode": "bigger"}, r"^sweep\.mode: expected auto, min or max, got 'bigger'"),
    ({"seeds": 0}, r"^sweep\.seeds: expected an int >= 1, got 0"),
    ({"num_samples": -2}, r"^sweep\.num_samples: expected an int >= 1, got -2"),
    ({"sampler_seed": -1}, r"^sweep\.sampler_seed: expected an int >= 0, got -1"),
    ({"params": [1, 2]}, r"^sweep\.params: expected a mapping, got a list"),
]


@pytest.mark.parametrize("sweep, message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_bad_specs_are_one_line_errors_naming_the_key(base, sweep, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_sweep(with_sweep(base, sweep))
    assert "\n" not in str(error.value)


def test_a_config_without_a_sweep_section(base):
    with pytest.raises(ConfigError, match=r"^config has no sweep: section — add one"):
        parse_sweep(base)


def test_grid_points_vary_the_first_key_slowest(base):
    spec = parse_sweep(with_sweep(base, {"params": {"optimizer.learning_rate": [1e-3, 1e-2],
                                                    "training.batch_size": {"int": [25, 75, 25]}}}))
    assert grid_points(spec.params) == [
        {"optimizer.learning_rate": lr, "training.batch_size": b} for lr in (1e-3, 1e-2) for b in (25, 50, 75)]


def test_random_points_are_reproducible_and_in_range(base):
    params = parse_sweep(with_sweep(base, {"method": "random", "params": {
        "optimizer.learning_rate": {"loguniform": [1e-4, 1e-1]}, "optimizer.b1": {"uniform": [0.8, 0.99]},
        "training.batch_size": {"int": [20, 60, 20]}, "model.args.hidden": {"choice": [[8], [16]]}}})).params
    first, again, other = (random_points(params, 50, seed) for seed in (3, 3, 4))
    assert first == again and first != other
    assert all(1e-4 <= p["optimizer.learning_rate"] <= 1e-1 and 0.8 <= p["optimizer.b1"] <= 0.99
               and p["training.batch_size"] in (20, 40, 60) and p["model.args.hidden"] in ([8], [16])
               for p in first)
    assert len({p["training.batch_size"] for p in first}) == 3  # every value drawn in 50 tries
    assert {type(v) for p in first for v in p.values()} <= {float, int, list}  # plain Python: YAML/JSON-ready


def test_grouping_splits_program_level_keys_and_vmaps_the_rest(base):
    spec = parse_sweep(with_sweep(base, {"seeds": 2, "params": {
        "optimizer.learning_rate": [1e-3, 1e-2], "model.args.hidden": [[8], [16]]}}))
    split = groups(spec, base)
    assert [g.overrides for g in split] == [{"model.args.hidden": [8]}, {"model.args.hidden": [16]}]
    for group, hidden in zip(split, ([8], [16])):
        assert group.members == [MemberSpec(seed, {"learning_rate": lr})
                                 for lr in (1e-3, 1e-2) for seed in (0, 1)]
        assert list(group.config.model.args.hidden) == hidden and group.config.sweep is None
        assert [p["model.args.hidden"] for p in group.points] == [hidden] * 4
    assert split[0].point_ids == [0, 0, 2, 2] and split[1].point_ids == [1, 1, 3, 3]


def test_seed_and_hyperparameters_are_vectorizable_batch_size_is_not(base):
    spec = parse_sweep(with_sweep(base, {"seeds": 2, "params": {"seed": [10, 20],
                                                               "optimizer.weight_decay": [1e-4, 1e-2]}}))
    (group,) = groups(spec, base)
    assert [m.seed for m in group.members] == [10, 11, 10, 11, 20, 21, 20, 21]
    assert group.members[2].hyperparams == {"weight_decay": 1e-2}
    spec = parse_sweep(with_sweep(base, {"params": {"training.batch_size": [25, 50]}}))
    assert [g.overrides for g in groups(spec, base)] == [{"training.batch_size": 25}, {"training.batch_size": 50}]


def test_a_null_vectorizable_key_becomes_injected_in_the_group_config(base):
    sgd = with_sweep(base, {"params": {"optimizer.momentum": [0.5, 0.9]}}, **{"optimizer.name": "sgd"})
    (group,) = groups(parse_sweep(sgd), sgd)
    assert sgd.optimizer.momentum is None and group.config.optimizer.momentum == 0.5
    hyperparams = build_optimizer(group.config.optimizer).init({"w": 0.0 * __import__("numpy").ones(2)})
    assert "momentum" in hyperparams.hyperparams
    assert [m.hyperparams for m in group.members] == [{"momentum": 0.5}, {"momentum": 0.9}]


def test_group_points_keeps_point_order_within_groups(base):
    spec = parse_sweep(with_sweep(base, {"method": "random", "num_samples": 6, "params": {
        "optimizer.learning_rate": {"loguniform": [1e-4, 1e-1]}, "model.args.hidden": [[8], [16]]}}))
    points = initial_points(spec)
    split = group_points(points, spec, base)
    assert sorted(i for g in split for i in g.point_ids) == list(range(6))
    for group in split:
        assert all(points[i]["model.args.hidden"] == group.overrides["model.args.hidden"] for i in group.point_ids)
        assert group.point_ids == sorted(group.point_ids)


def test_an_optimizer_keyword_the_base_config_leaves_unset_can_be_swept(base):
    config = with_sweep(base, {"params": {"optimizer.decay": [0.9, 0.95]}}, **{"optimizer.name": "rmsprop"})
    assert parse_sweep(config).params["optimizer.decay"].values == (0.9, 0.95)
