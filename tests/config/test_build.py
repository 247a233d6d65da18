"""Building models, optimizers, losses, data and augmentation from config sections."""
import numpy as np
import pytest
from omegaconf import OmegaConf

import fdl
from fdl.config import ConfigError, build_augment, build_data, build_layer, build_loss, build_model, build_optimizer
from fdl.config.schema import DataConfig, LossConfig, ModelConfig, OptimizerConfig


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


def test_optimizer_and_loss_sections():
    optimizer = build_optimizer(section(OptimizerConfig, name="sgd", learning_rate=0.5, momentum=0.9))
    state = optimizer.init({"w": np.zeros(2, np.float32)})
    assert float(fdl.optim.current_learning_rate(state)) == 0.5
    with pytest.raises(ConfigError, match="optimizer: .*momentum"):
        build_optimizer(section(OptimizerConfig, name="adam", momentum=0.9))
    smooth = build_loss(section(LossConfig, name="cross_entropy", label_smoothing=0.1))
    logits, label = np.array([2.0, 0.0, -1.0], np.float32), 0
    expected = -(0.9 + 0.1 / 3) * np.log(np.exp(2) / np.exp(logits).sum()) - (0.1 / 3) * (
        np.log(1 / np.exp(logits).sum()) + np.log(np.exp(-1) / np.exp(logits).sum()))
    np.testing.assert_allclose(smooth(logits, label), expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="loss.name: unknown loss"):
        build_loss(section(LossConfig, name="cross_entrpy"))


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
    from fdl.config.run import check_metrics
    path = tmp_path / "ae.yaml"
    path.write_text("data: {target: input}\nmodel: {name: autoencoder}\nloss: mse\nmetrics: [accuracy, mse]\n")
    with pytest.raises(ConfigError, match="metrics: accuracy need class labels, but data.target is 'input'"):
        check_metrics(load_config(path))
