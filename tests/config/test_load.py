"""Config loading: typed schema, did-you-mean errors, base files, overrides."""
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fdl.config import ConfigError, load_config, parse_overrides, to_yaml
from fdl.config.build import build_loss, optimizer_arguments
from fdl.config.load import merge_config
from fdl.losses import get_loss

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path):
    write(tmp_path / "base.yaml", "optimizer: {name: adam, learning_rate: 0.01}\n"
                                  "training: {epochs: 3, batch_size: 16}\nmodel: {name: mlp}\n")
    return tmp_path


def test_a_file_extends_its_base_and_overrides_win(base):
    child = write(base / "child.yaml", "defaults: base.yaml\ntraining: {epochs: 5}\nseed: 3\n")
    config = load_config(child, ["optimizer.learning_rate=3e-4", "metrics=[accuracy, f1]"])
    assert config.training.epochs == 5 and config.training.batch_size == 16
    assert config.optimizer.learning_rate == pytest.approx(3e-4) and config.optimizer.name == "adam"
    assert list(config.metrics) == ["accuracy", "f1"] and config.seed == 3
    assert config.name == "child"


def test_shorthands_for_model_layers_and_loss(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  - Dense: {features: 4}\n  - Relu\nloss: mse\n")
    config = load_config(path)
    assert config.model.layers[1] == "Relu" and config.loss.name == "mse"


@pytest.mark.parametrize("text,message", [
    ("optimizer: {learnig_rate: 0.1}\nmodel: {name: mlp}",
     r"optimizer.learnig_rate: unknown key — did you mean optimizer.learning_rate\?"),
    ("trainig: {epochs: 2}\nmodel: {name: mlp}", r"trainig: unknown key — did you mean training\?"),
    ("callbacks: {early_stopping: {patiense: 3}}\nmodel: {name: mlp}",
     r"callbacks.early_stopping.patiense: unknown key — did you mean callbacks.early_stopping.patience\?"),
    ("training: {epochs: ten}\nmodel: {name: mlp}", r"training.epochs: Value 'ten'"),
    ("model: {name: mlp, layers: [Relu]}",
     r"model: give one of model.name .* not model.name and model.layers — clear all but one, e.g. "
     r"--set model.layers=null$"),
    ("model: {target: a.b, layers: [Relu]}", r"not model.layers and model.target"),
    ("seed: 1", r"model: give one of model.name .*, model.layers .* or model.target .*, none is set$"),
    ("model: {name: mlp}\noptimizer: {name: sgd, nesterof: true}",
     r"^.*bad.yaml: optimizer.nesterof: not an argument of optax sgd — did you mean optimizer.nesterov\?$"),
    ("model: {name: mlp}\noptimizer: {name: adm}",
     r"bad.yaml: optimizer.name: unknown optimizer 'adm' — did you mean"),
    ("model: {name: mlp}\noptimizer: {name: adam, momentum: 0.9}",
     r"bad.yaml: optimizer.momentum: not an argument of optax adam — valid: learning_rate, .*, b1, b2"),
    ("model: {name: mlp}\noptimizer: {name: sgd, zzzzz: 1}",
     r"optimizer.zzzzz: not an argument of optax sgd — valid: learning_rate, .*, momentum, nesterov"),
    ("model: {name: mlp}\nloss: {name: mse, args: {label_smoothing: 0.1}}",
     r"bad.yaml: loss.args.label_smoothing: mse takes no argument 'label_smoothing' — valid: \(none\)$"),
    ("model: {name: mlp}\nloss: {name: huber, args: {deltta: 2}}",
     r"bad.yaml: loss.args.deltta: huber takes no argument 'deltta' — did you mean 'delta'\?$"),
    ("model: {name: mlp}\nloss: {name: cross_entropy, args: {label_smoothing: 1.5}}",
     r"loss.args.label_smoothing: cross_entropy label_smoothing: expected a number in \[0, 1\), got 1.5$"),
    ("model: {name: mlp}\nloss: huberr", r"bad.yaml: loss.name: unknown loss 'huberr' — did you mean 'huber'\?"),
    ("model: {name: mlp}\nloss: {name: mse, smoothing: 0.1}", r"loss.smoothing: unknown key — valid: name, args$"),
    ("model: {name: mlp}\nloss: {name: mse, label_smoothing: 0.1}",
     r"loss.args.label_smoothing: mse takes no argument"),  # a pre-loss.args key moves there
    ("model: {name: mlp}\nsweep: {metod: grid}",
     r"bad.yaml: sweep.metod: unknown key — did you mean sweep.method\?$"),
    ("model: {name: mlp}\nsweep: {seeds: many}", r"bad.yaml: sweep.seeds: Value 'many'"),
    ("model: {name: mlp}\ncallbacks: {custom: {target: a.b}}",
     r"bad.yaml: callbacks.custom: expected a list, got a mapping$"),
    ("model: {name: mlp}\ncallbacks: {checkpoint: [1]}",
     r"bad.yaml: callbacks.checkpoint: expected a mapping, got a list$"),
    ("model: {name: mlp}\nsweep: {params: [1]}", r"bad.yaml: sweep.params: expected a mapping, got a list$"),
    ("defaults: [3]\nmodel: {name: mlp}",
     r"bad.yaml: defaults: expected a file name or a list of file names, got \[3\]"),
    ("model: [Relu\n", r"line \d+: not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_bad_configs_are_one_line_errors_naming_the_key(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert "\n" not in str(error.value)


def test_missing_file_loop_and_bad_override(tmp_path, base):
    with pytest.raises(ConfigError, match="config file .*nope.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")
    write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    write(tmp_path / "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"--set: optimizer.learning_rat: unknown key — did you mean optimizer.learning_rate\?"):
        load_config(base / "base.yaml", ["optimizer.learning_rat=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(base / "base.yaml", ["seed"])


def test_an_empty_file_says_so(tmp_path):
    for text in ("", "# only a comment\n"):
        path = write(tmp_path / "x.yaml", text)
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: the file is empty — a config needs at least a "
                                              r"model: section, see configs/mnist1d_mlp.yaml$"):
            load_config(path)
    write(tmp_path / "empty_base.yaml", "")
    child = write(tmp_path / "child.yaml", "defaults: empty_base.yaml\nmodel: {name: mlp}\n")
    assert load_config(child).model.name == "mlp"  # an empty base adds nothing


def test_a_missing_defaults_file_names_the_config_that_refers_to_it(tmp_path):
    write(tmp_path / "a.yaml", "defaults: [b.yaml]\nmodel: {name: mlp}\n")
    write(tmp_path / "b.yaml", "defaults: base.yaml\n")
    b, missing = re.escape(str(tmp_path / "b.yaml")), re.escape(str(tmp_path / "base.yaml"))
    with pytest.raises(ConfigError, match=rf"^{b}: defaults: 'base.yaml' does not exist \(looked for {missing}\)$"):
        load_config(tmp_path / "a.yaml")


def test_loss_section_takes_the_loss_arguments(tmp_path, base):
    path = write(tmp_path / "c.yaml", "model: {name: mlp}\nloss: {name: huber, args: {delta: 2.0}}\n")
    config = load_config(path)
    assert build_loss(config.loss) == get_loss("huber", delta=2.0)
    assert build_loss(load_config(path, ["loss.args.delta=3"]).loss) == get_loss("huber", delta=3.0)
    assert build_loss(load_config(path).loss) == build_loss(config.loss)  # equal configs, equal losses
    # Another loss from the command line: clear the arguments it does not take.
    assert build_loss(load_config(path, ["loss.name=mse", "loss.args.delta=null"]).loss) == get_loss("mse")
    with pytest.raises(ConfigError, match=r"^--set 'loss.args.delta=null': an earlier --set gave loss the value "
                                          r"'mse', which has no keys — set loss.KEY=VALUE"):
        load_config(path, ["loss=mse", "loss.args.delta=null"])
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: loss.args.delta: mse takes no argument"):
        load_config(path, ["loss.name=mse"])


def test_run_directories_written_before_loss_args_still_load(tmp_path):
    old = "model: {name: mlp}\nloss: {name: %s, label_smoothing: %s, delta: %s}\n"
    assert build_loss(load_config(write(tmp_path / "a.yaml", old % ("mse", 0.0, 1.0))).loss) == get_loss("mse")
    smoothed = load_config(write(tmp_path / "b.yaml", old % ("cross_entropy", 0.1, 1.0)))
    assert build_loss(smoothed.loss) == get_loss("cross_entropy", label_smoothing=0.1)
    assert OmegaConf.to_container(smoothed.loss) == {"name": "cross_entropy", "args": {"label_smoothing": 0.1}}


def test_optimizer_section_takes_any_argument_of_its_alias(tmp_path):
    path = write(tmp_path / "o.yaml", "model: {name: mlp}\noptimizer: {name: rmsprop, decay: 0.8}\n")
    config = load_config(path, ["optimizer.initial_scale=0.1", "optimizer.momentum=0.5"])
    assert optimizer_arguments(config.optimizer) == {"name": "rmsprop", "learning_rate": 1e-3, "accumulate_steps": 1,
                                                     "momentum": 0.5, "decay": 0.8, "initial_scale": 0.1}
    reloaded = load_config(write(tmp_path / "run.yaml", to_yaml(config)))  # a run directory's config.yaml
    assert optimizer_arguments(reloaded.optimizer) == optimizer_arguments(config.optimizer)
    # A sweep sets keys on a copy of the loaded config: typed ones are type-checked, others are free.
    point = config.copy()
    OmegaConf.update(point, "optimizer.b1", 0.9, merge=False)
    OmegaConf.update(point, "optimizer.centered", True, merge=False)
    assert point.optimizer.b1 == 0.9 and point.optimizer.centered is True and "centered" not in config.optimizer
    with pytest.raises(Exception, match="could not be converted to Float"):
        OmegaConf.update(point, "optimizer.momentum", "fast", merge=False)
    # The error names where the key came from; null unsets it.
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: optimizer.decay: not an argument of optax "
                                          r"adam — valid:"):
        load_config(path, ["optimizer.name=adam"])
    unset = load_config(path, ["optimizer.name=adam", "optimizer.decay=null"])
    assert "decay" not in optimizer_arguments(unset.optimizer)
    with pytest.raises(ConfigError, match=r"^--set: optimizer.nesterof: not an argument of optax sgd — did you "
                                          r"mean optimizer.nesterov\?$"):
        load_config(path, ["optimizer.name=sgd", "optimizer.decay=null", "optimizer.nesterof=true"])


def test_sweep_section_is_typed(tmp_path, base):
    child = write(base / "s.yaml", "defaults: base.yaml\nsweep: {method: random, params: "
                                   "{optimizer.b1: {uniform: [0.8, 0.99]}, model.args.hidden: [[8], [16]]}}\n")
    config = load_config(child)
    assert config.sweep.method == "random" and config.sweep.seeds == 1 and config.sweep.sampler == "tpe"
    assert OmegaConf.to_container(config.sweep.params) == {"optimizer.b1": {"uniform": [0.8, 0.99]},
                                                           "model.args.hidden": [[8], [16]]}
    assert load_config(base / "base.yaml").sweep is None
    assert load_config(child, ["sweep.seeds=4"]).sweep.seeds == 4
    with pytest.raises(ConfigError, match=r"^--set: sweep.sede: unknown key — did you mean sweep.seed"):
        load_config(child, ["sweep.sede=4"])


def test_merge_config_sets_a_typed_section_from_a_dict(base):
    config = load_config(base / "base.yaml")
    swept = merge_config(config, {"sweep": {"method": "grid", "params": {"optimizer.learning_rate": [0.1]}}})
    assert swept.sweep.method == "grid" and config.sweep is None  # a copy
    assert merge_config(config, {"loss": "mse"}).loss.name == "mse"  # the shorthands too
    with pytest.raises(ConfigError, match=r"^sweep.metod: unknown key — did you mean sweep.method\?$"):
        merge_config(config, {"sweep": {"metod": "grid"}})
    with pytest.raises(ConfigError, match=r"^point: optimizer.nesterof: not an argument of optax adam"):
        merge_config(config, {"optimizer": {"nesterof": True}}, "point")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    # A base file (mnist1d_base.yaml) leaves the model to the configs that extend it.
    config = load_config(path, ["model.name=mlp"] if path.stem.endswith("_base") else [])
    build_loss(config.loss)


def test_overrides_are_typed_by_yaml():
    assert parse_overrides(["a.b=3e-4", "c=true", "d=[1, 2]", "e=text"]) == \
        {"a": {"b": 3e-4}, "c": True, "d": [1, 2], "e": "text"}
