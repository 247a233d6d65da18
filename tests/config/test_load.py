"""Config loading: typed schema, did-you-mean errors, base files, overrides."""
import pytest

from fdl.config import ConfigError, load_config, parse_overrides


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
    ("model: {name: mlp, layers: [Relu]}", "model: give either model.name .* not both"),
    ("seed: 1", "model: give either model.name .* none is set"),
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


def test_overrides_are_typed_by_yaml():
    assert parse_overrides(["a.b=3e-4", "c=true", "d=[1, 2]", "e=text"]) == \
        {"a": {"b": 3e-4}, "c": True, "d": [1, 2], "e": "text"}
