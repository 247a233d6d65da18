"""Building models, optimizers, losses, data, augmentation and user components from config sections."""
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import fdl
from fdl.config import ConfigError, build_augment, build_data, build_layer, build_loss, build_model, build_optimizer
from fdl.config.build import build_custom_callbacks, optimizer_arguments
from fdl.config.schema import DataConfig, LossConfig, ModelConfig, OptimizerConfig, RunConfig


def section(schema, **values):
    return OmegaConf.merge(OmegaConf.structured(schema), values)


def test_layer_specs_build_named_nested_models():
    model = build_model(section(ModelConfig, layers=[
        {"Dense": {"features": 8, "name": "hidden"}}, "Relu",
        {"residual": [{"Dense": {"features": 8}}]}, {"Dense": {"features": 2}}]))
    shape, params, _ = model.init(fdl.nn.core.jax.random.key(0), (3,))
    assert shape == (2,) and set(params) == {"hidden", "relu_1", "residual_2", "dense_3"}
    assert params["hidden"]["w"].shape == (3, 8)


@pytest.mark.parametrize("spec,message", [
    ({"Dense": {"featurs": 8}}, r"model.layers Dense: .*featurs"),
    ({"Dens": {"features": 8}}, r"model.layers: unknown layer 'Dens' — did you mean 'Dense'\?"),
    ({"serial": {"Dense": {}}}, "expected a list of layer specs"),
    ({"Dense": {}, "Relu": {}}, "one-key mapping"),
])
def test_bad_layer_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_layer(spec)


def test_registered_models_and_their_errors():
    assert build_model(section(ModelConfig, name="mnist1d_mlp", args={"hidden": [5]})).kind == "Serial"
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'mnist1d_cn' — did you mean 'mnist1d_cnn'\?"):
        build_model(section(ModelConfig, name="mnist1d_cn"))
    with pytest.raises(ConfigError, match=r"model.args \(mlp\):.*width"):
        build_model(section(ModelConfig, name="mlp", args={"width": 3}))


def open_optimizer(**values):
    """An optimizer section as load_config makes it: typed keys plus the alias's own."""
    base = OmegaConf.structured(OptimizerConfig)
    OmegaConf.set_struct(base, False)
    return OmegaConf.merge(base, values)


def test_optimizer_section():
    optimizer = build_optimizer(section(OptimizerConfig, name="sgd", learning_rate=0.5, momentum=0.9))
    state = optimizer.init({"w": np.zeros(2, np.float32)})
    assert float(fdl.optim.current_learning_rate(state)) == 0.5
    assert float(fdl.optim.get_hyperparameter(state, "momentum")) == pytest.approx(0.9)
    with pytest.raises(ConfigError, match=r"^optimizer: unknown optimizer 'adam' hyperparameter 'momentum' — "):
        build_optimizer(section(OptimizerConfig, name="adam", momentum=0.9))
    with pytest.raises(ConfigError, match=r"^optimizer: unknown optimizer 'adm' — did you mean 'adam'\?"):
        build_optimizer(section(OptimizerConfig, name="adm"))
    with pytest.raises(ConfigError, match=r"^optimizer: accumulate_steps must be an int >= 1, got 0"):
        build_optimizer(section(OptimizerConfig, accumulate_steps=0))


def test_any_argument_of_the_optax_alias_reaches_it():
    config = open_optimizer(name="rmsprop", learning_rate=0.1, decay=0.5, initial_scale=1.0)
    assert optimizer_arguments(config) == {"name": "rmsprop", "learning_rate": 0.1, "accumulate_steps": 1,
                                           "decay": 0.5, "initial_scale": 1.0}  # unset keys left out
    optimizer = build_optimizer(config)
    params = {"w": np.ones(1, np.float32)}
    state = optimizer.init(params)
    assert float(fdl.optim.get_hyperparameter(state, "decay")) == 0.5
    # rmsprop: nu = decay * initial_scale + (1 - decay) * g^2 = 0.5 + 0.5 * 4; update = -lr * g / sqrt(nu).
    updates, _ = optimizer.update({"w": np.full(1, 2.0, np.float32)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.1 * 2.0 / np.sqrt(2.5), rtol=1e-5)
    with pytest.raises(ConfigError, match=r"^optimizer: unknown optimizer 'rmsprop' hyperparameter 'deccay' — "
                                          r"did you mean 'decay'\?"):
        build_optimizer(open_optimizer(name="rmsprop", deccay=0.5))


def test_loss_section_builds_a_value_equal_loss():
    smooth = build_loss(section(LossConfig, name="cross_entropy", args={"label_smoothing": 0.1}))
    logits, label = np.array([2.0, 0.0, -1.0], np.float32), 0
    expected = -(0.9 + 0.1 / 3) * np.log(np.exp(2) / np.exp(logits).sum()) - (0.1 / 3) * (
        np.log(1 / np.exp(logits).sum()) + np.log(np.exp(-1) / np.exp(logits).sum()))
    np.testing.assert_allclose(smooth(logits, label), expected, rtol=1e-5)
    again = build_loss(OmegaConf.create({"name": "cross_entropy", "args": {"label_smoothing": 0.1}}))
    assert smooth == again and hash(smooth) == hash(again) and smooth.name == "cross_entropy"
    assert build_loss(section(LossConfig, name="huber", args={"delta": None})) == fdl.losses.get_loss("huber")
    assert build_loss(section(LossConfig, name="elbo_gaussian")).kwargs == {"likelihood": "gaussian"}


@pytest.mark.parametrize("values,message", [
    ({"name": "cross_entrpy"}, r"^loss.name: unknown loss 'cross_entrpy' — did you mean 'cross_entropy'\?"),
    ({"name": "mse", "args": {"label_smoothing": 0.1}},
     r"^loss.args.label_smoothing: mse takes no argument 'label_smoothing' — valid: \(none\)$"),
    ({"name": "huber", "args": {"deltta": 2.0}},
     r"^loss.args.deltta: huber takes no argument 'deltta' — did you mean 'delta'\?$"),
    ({"name": "huber", "args": {"delta": -1.0}}, r"^loss.args.delta: huber delta: expected a number > 0"),
])
def test_bad_loss_sections(values, message):
    with pytest.raises(ConfigError, match=message):
        build_loss(section(LossConfig, **values))


def test_data_section_splits_retargets_and_preprocesses(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(3, 2, (50, 4)).astype(np.float32),
             y=np.arange(50) % 5, x_test=rng.normal(size=(10, 4)).astype(np.float32), y_test=np.arange(10) % 5)
    prepared = build_data(section(DataConfig, name="npz", path=str(tmp_path / "d.npz"), val_fraction=0.2,
                                  preprocess="standardize", target="one_vs_rest", positive_class=2), seed=0)
    ds = prepared.dataset
    assert len(ds.train.x) == 40 and len(ds.val.x) == 10
    np.testing.assert_allclose(ds.train.x.mean(0), 0, atol=1e-5)
    assert ds.train.y.shape == (40, 1) and set(np.unique(ds.train.y)) == {0.0, 1.0}
    assert np.all(np.abs(prepared.stats["mean"] - 3) < 1.5)  # fitted on the raw training features
    assert np.abs(ds.val.x.mean(0)).max() > 1e-3  # val is transformed with train's statistics
    with pytest.raises(ConfigError, match="data.positive_class"):
        build_data(section(DataConfig, name="npz", path=str(tmp_path / "d.npz"), target="one_vs_rest"), 0)
    with pytest.raises(ConfigError, match="data: .*missing.npz: no such file"):
        build_data(section(DataConfig, name="npz", path=str(tmp_path / "missing.npz")), 0)


def test_augment_section():
    augment = build_augment(section(DataConfig, augment=[{"gaussian_noise": {"std": 0.5}}]))
    x = np.zeros((1000,), np.float32)
    noisy = np.asarray(augment(fdl.nn.core.jax.random.key(0), x))
    assert abs(noisy.std() - 0.5) < 0.05
    assert build_augment(section(DataConfig)) is None
    with pytest.raises(ConfigError, match=r"data.augment\[0\]: unknown augmentation 'random_shft'"):
        build_augment(section(DataConfig, augment=["random_shft"]))


def test_autoencoder_targets_are_the_preprocessed_inputs(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.normal(3, 2, (40, 4)).astype(np.float32), y=np.arange(40) % 2)
    prepared = build_data(section(DataConfig, name="npz", path=str(tmp_path / "d.npz"), val_fraction=0.25,
                                  preprocess="min_max", target="input"), seed=0)
    train = prepared.dataset.train
    np.testing.assert_array_equal(train.y, train.x)
    assert train.x.min() >= 0 and train.x.max() <= 1


def test_classification_metrics_on_a_reconstruction_are_refused(tmp_path):
    from fdl.config import load_config
    from fdl.config.arguments import _check_metrics as check_metrics  # moved from fdl.config.run
    path = tmp_path / "ae.yaml"
    path.write_text("data: {target: input}\nmodel: {name: autoencoder}\nloss: mse\nmetrics: [accuracy, mse]\n")
    with pytest.raises(ConfigError, match="metrics: accuracy need class labels, but data.target is 'input'"):
        check_metrics(load_config(path))


USER_MODULE = "fdl_test_user_components"
USER_CODE = """
from fdl import nn
from fdl.train.callbacks import Callback

VALUE = 3


def Head(features):
    return nn.Dense(features)


def make(hidden, classes=2):
    return nn.serial(nn.Dense(hidden), nn.Relu(), nn.Dense(classes))


def not_a_layer():
    return "layer"


class Notify(Callback):
    def __init__(self, every=1):
        self.every = every
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module on sys.path, importable as USER_MODULE (removed again afterwards)."""
    (tmp_path / f"{USER_MODULE}.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield USER_MODULE
    sys.modules.pop(USER_MODULE, None)


def test_layers_by_import_path(user_module):
    model = build_model(section(ModelConfig, layers=[
        {"target": f"{user_module}.Head", "args": {"features": 4}, "name": "mine"}, "Relu",
        {"serial": [{"target": f"{user_module}.Head", "args": {"features": 3}}]}]))
    shape, params, _ = model.init(fdl.nn.core.jax.random.key(0), (5,))
    assert shape == (3,) and params["mine"]["w"].shape == (5, 4)
    assert params["serial_2"]["dense_0"]["w"].shape == (4, 3)


def test_model_by_import_path(user_module):
    model = build_model(section(ModelConfig, target=f"{user_module}.make", args={"hidden": 6}))
    shape, params, _ = model.init(fdl.nn.core.jax.random.key(0), (5,))
    assert shape == (2,) and params["dense_0"]["w"].shape == (5, 6)


FIX = "give module.attribute of a callable"


@pytest.mark.parametrize("spec,message", [
    ({"target": "fdl_no_such_pkg.nope"}, r"^model.layers\[0\].target: cannot import 'fdl_no_such_pkg.nope' "
     rf"\(No module named 'fdl_no_such_pkg'\) — {FIX}$"),
    ({"target": "{m}.Hed"}, r"^model.layers\[0\].target: cannot import '{m}.Hed' \(module '{m}' has no "
     r"attribute 'Hed'; did you mean {m}.Head\?\)"),
    ({"target": "Head"}, rf"^model.layers\[0\].target: cannot import 'Head' \(not a dotted path\) — {FIX}$"),
    ({"target": "{m}.VALUE"}, rf"^model.layers\[0\].target: '{{m}}.VALUE' is of type int, not a callable — {FIX}$"),
    ({"target": "{m}.not_a_layer"}, r"^model.layers\[0\].target: {m}.not_a_layer returned str, not an fdl.nn.Layer"),
    ({"target": "{m}.Head", "args": {"featurs": 3}}, r"^model.layers\[0\] {m}.Head: .*featurs"),
    ({"target": "{m}.Head", "arg": {"features": 3}},
     r"^model.layers\[0\].arg: unknown key — did you mean model.layers\[0\].args\?"),
    ({"target": "{m}.Head", "args": [3]}, r"^model.layers\[0\].args: expected a mapping of keyword arguments"),
    ({"target": "{m}.Head", "args": {"features": 3}, "name": "a b"}, r"^model.layers\[0\].name: .*not a valid"),
])
def test_bad_layer_targets(user_module, spec, message):
    spec = {key: value.format(m=user_module) if isinstance(value, str) else value for key, value in spec.items()}
    with pytest.raises(ConfigError, match=message.format(m=user_module)) as error:
        build_layer(spec, "model.layers[0]")
    assert "\n" not in str(error.value)


def test_bad_model_targets(user_module):
    with pytest.raises(ConfigError, match=rf"^model.target: cannot import 'fdl_no_such_pkg.make' .* — {FIX}$"):
        build_model(section(ModelConfig, target="fdl_no_such_pkg.make"))
    with pytest.raises(ConfigError, match=rf"^model.args \({user_module}.make\): .*hidden"):
        build_model(section(ModelConfig, target=f"{user_module}.make"))
    with pytest.raises(ConfigError, match=r"^model.target: .*not_a_layer returned str, not an fdl.nn.Layer"):
        build_model(section(ModelConfig, target=f"{user_module}.not_a_layer"))


def test_custom_callbacks_by_import_path(user_module):
    config = OmegaConf.merge(OmegaConf.structured(RunConfig), {"callbacks": {"custom": [
        {"target": f"{user_module}.Notify", "args": {"every": 5}}, {"target": f"{user_module}.Notify"}]}})
    built = build_custom_callbacks(config)
    assert [type(c).__name__ for c in built] == ["Notify", "Notify"] and [c.every for c in built] == [5, 1]
    assert build_custom_callbacks(OmegaConf.structured(RunConfig)) == []


@pytest.mark.parametrize("entry,message", [
    ("{m}.Notify", r"^callbacks.custom\[0\]: expected \{{target: module.attribute, args: \{{...\}}\}}, got"),
    ({"args": {"every": 2}}, r"^callbacks.custom\[0\].target: missing"),
    ({"target": "{m}.Notify", "name": "x"}, r"^callbacks.custom\[0\].name: unknown key — valid: target, args$"),
    ({"target": "{m}.Notfy"}, r"^callbacks.custom\[0\].target: cannot import '{m}.Notfy' .*did you mean {m}.Notify"),
    ({"target": "{m}.Notify", "args": {"evry": 2}}, r"^callbacks.custom\[0\] {m}.Notify: .*evry"),
    ({"target": "{m}.not_a_layer"}, r"^callbacks.custom\[0\].target: {m}.not_a_layer returned str, not a callback"),
])
def test_bad_custom_callbacks(user_module, entry, message):
    if isinstance(entry, str):
        entry = entry.format(m=user_module)
    else:
        entry = {k: v.format(m=user_module) if isinstance(v, str) else v for k, v in entry.items()}
    config = OmegaConf.merge(OmegaConf.structured(RunConfig), {"callbacks": {"custom": [entry]}})
    with pytest.raises(ConfigError, match=message.format(m=user_module)):
        build_custom_callbacks(config)


@pytest.mark.parametrize("override, message", [
    ("training.epochs=0", "training.epochs must be an int >= 1, got 0 — set training.epochs=1"),
    ("training.eval_batch_size=0", "training.eval_batch_size must be an int >= 1, got 0 — set training.eval_batch_size=1"),
    ("callbacks.checkpoint.keep=0", "callbacks.checkpoint.keep must be an int >= 1, got 0"),
    ("callbacks.checkpoint.every_steps=0", "callbacks.checkpoint.every_steps must be an int >= 1, got 0"),
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience must be an int >= 0, got -1"),
    ("seed=-3", "seed must be an int >= 0, got -3 — set seed=0"),
    ("training.verbose=7", r"training.verbose: expected 0 \(quiet\), 1 \(a progress bar\) or 2"),
])
def test_a_count_out_of_range_is_named_by_its_config_key(override, message):
    from fdl.config import build_arguments, load_config

    with pytest.raises(ConfigError, match=f"^{message}"):
        build_arguments(load_config(Path(__file__).parents[2] / "configs" / "mnist1d_logreg.yaml", [override]))


def test_a_batch_larger_than_the_training_split_is_named_when_training():
    from fdl.config import build_arguments, load_config

    arguments = build_arguments(load_config(Path(__file__).parents[2] / "configs" / "mnist1d_logreg.yaml",
                                            ["training.batch_size=5000"]))  # builds: `fdl summary` needs no batch
    with pytest.raises(ConfigError, match=r"^training.batch_size must be an int in \[1, 3600\], got 5000 — set "
                                          "training.batch_size=3600"):
        arguments.fit_arguments()


def test_fit_names_a_zero_eval_batch_size():
    with pytest.raises(ValueError, match="eval_batch_size must be an int >= 1, got 0"):
        fdl.fit(fdl.nn.Dense(2), (np.zeros((8, 3), np.float32), np.zeros(8, np.int32)), batch_size=4,
                eval_batch_size=0, verbose=0)
