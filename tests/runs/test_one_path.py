"""One path from config to compiled program: a one-member sweep trains what `fdl train` trains.

For every key of the `training:` and `callbacks:` sections, set to a value
other than its default, `fdl train` and a one-member `fdl sweep` of the same
config and seed end with the same test scores, epochs and learning rate — or
the sweep refuses the key by name.
"""
import pathlib

import numpy as np
import pytest

from fdl.config import ConfigError, load_config
from fdl.runs import train_from_config
from fdl.runs.sweep import run_sweep

BASE = """
seed: 3
data: {name: mnist1d, limit_train: 200, val_fraction: 0.25}
model: {name: mnist1d_mlp, args: {hidden: [16]}}
optimizer: {name: adam, learning_rate: 3e-2}
training: {epochs: 5, batch_size: 50, verbose: 0}
metrics: [accuracy]
output: {tensorboard: false, plots: false}
"""
SWEEP = """
defaults: base.yaml
sweep: {seeds: 1, monitor: val_accuracy}
"""
STOPPING = ["callbacks.early_stopping.enabled=true", "callbacks.early_stopping.patience=1"]
PLATEAU = ["callbacks.reduce_lr_on_plateau.enabled=true", "callbacks.reduce_lr_on_plateau.patience=1",
           "callbacks.reduce_lr_on_plateau.factor=0.5"]
HONOURED = {
    "training.epochs": ["training.epochs=3"],
    "training.devices": ["training.devices=1"],  # each member on 1 device of "data" (more: test_population_mesh)
    "training.batch_size": ["training.batch_size=40"],
    "training.eval_batch_size": ["training.eval_batch_size=64"],
    "training.verbose": ["training.verbose=1"],
    "callbacks.early_stopping.enabled": STOPPING,
    "callbacks.early_stopping.monitor": STOPPING + ["callbacks.early_stopping.monitor=val_accuracy"],
    "callbacks.early_stopping.patience": STOPPING[:1] + ["callbacks.early_stopping.patience=2"],
    "callbacks.early_stopping.mode": STOPPING + ["callbacks.early_stopping.monitor=loss",
                                                 "callbacks.early_stopping.mode=max"],
    "callbacks.early_stopping.min_delta": STOPPING + ["callbacks.early_stopping.min_delta=0.05"],
    "callbacks.early_stopping.restore_best": STOPPING + ["callbacks.early_stopping.restore_best=false"],
    "callbacks.reduce_lr_on_plateau.enabled": PLATEAU,
    "callbacks.reduce_lr_on_plateau.monitor": PLATEAU + ["callbacks.reduce_lr_on_plateau.monitor=val_accuracy"],
    "callbacks.reduce_lr_on_plateau.factor": PLATEAU[:2] + ["callbacks.reduce_lr_on_plateau.factor=0.2"],
    "callbacks.reduce_lr_on_plateau.patience": PLATEAU[::2] + ["callbacks.reduce_lr_on_plateau.patience=2"],
    "callbacks.reduce_lr_on_plateau.mode": PLATEAU + ["callbacks.reduce_lr_on_plateau.monitor=loss",
                                                      "callbacks.reduce_lr_on_plateau.mode=max"],
    "callbacks.reduce_lr_on_plateau.min_delta": PLATEAU + ["callbacks.reduce_lr_on_plateau.min_delta=0.5"],
    "callbacks.reduce_lr_on_plateau.cooldown": PLATEAU + ["callbacks.reduce_lr_on_plateau.cooldown=2"],
    "callbacks.reduce_lr_on_plateau.min_learning_rate":
        PLATEAU + ["callbacks.reduce_lr_on_plateau.min_learning_rate=0.02"],
    # A sweep writes no checkpoints; best.yaml carries these keys to the `fdl train` of the best point.
    # They change no number, so one case sets them all.
    "callbacks.checkpoint.*": ["callbacks.checkpoint.monitor=val_accuracy", "callbacks.checkpoint.mode=max",
                               "callbacks.checkpoint.every=2", "callbacks.checkpoint.every_seconds=null",
                               "callbacks.checkpoint.every_steps=3",
                               "callbacks.checkpoint.keep=1"],
}
REFUSED = {
    "training.fused": ["training.fused=false"],
    "training.shard_params": ["training.shard_params=fsdp"],
    "training.model_axis": ["training.model_axis=2"],
    "training.precision": ["training.precision=mixed_bfloat16"],
}


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    (folder / "base.yaml").write_text(BASE)
    (folder / "sweep.yaml").write_text(SWEEP)
    return folder


def test_every_training_and_callbacks_key_is_covered():
    """A key added to the schema must be added here too: honoured (compared) or refused."""
    config = load_config_of_schema()
    keys = [f"training.{k}" for k in config.training] + [
        f"callbacks.{section}.{k}" for section in ("early_stopping", "reduce_lr_on_plateau", "checkpoint")
        for k in config.callbacks[section]]
    checkpoint = [key for key in keys if key.startswith("callbacks.checkpoint.")]
    assert {override.split("=")[0] for override in HONOURED["callbacks.checkpoint.*"]} == set(checkpoint)
    assert sorted(set(keys) - set(checkpoint)) == sorted(set(HONOURED) - {"callbacks.checkpoint.*"} | set(REFUSED))


def load_config_of_schema():
    from omegaconf import OmegaConf

    from fdl.config.schema import RunConfig
    return OmegaConf.structured(RunConfig)


@pytest.mark.parametrize("key", sorted(HONOURED))
def test_a_one_member_sweep_equals_fdl_train(configs, tmp_path, key):
    overrides = HONOURED[key]
    trained = train_from_config(load_config(configs / "base.yaml", overrides + [f"output.dir={tmp_path / 'run'}"]))
    swept = run_sweep(configs / "sweep.yaml", overrides=overrides, out_dir=tmp_path / "sweep", verbose=0)
    (row,), history = swept.rows, trained.history
    assert row["epochs"] == len(history), key
    np.testing.assert_allclose(row["final_learning_rate"], history[-1]["learning_rate"], rtol=1e-6)
    np.testing.assert_allclose(row["final_val_loss"], history[-1]["val_loss"], rtol=1e-4)
    for metric in ("loss", "accuracy"):
        np.testing.assert_allclose(row[f"test_{metric}"], trained.summary["test"][metric], rtol=1e-4,
                                   err_msg=key)


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_a_sweep_refuses_what_a_population_cannot_honour_by_name(configs, tmp_path, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        run_sweep(configs / "sweep.yaml", overrides=REFUSED[key], out_dir=tmp_path / "sweep", verbose=0)


# configs/vae.yaml (vae_elbo on the (x, y) Splits, labels unused), shrunk to a few steps; eval batches
# of 20 divide every split (180, 20, 1000), so one evaluation program serves them all.
VAE_SWEEP = """
defaults: {root}/configs/vae.yaml
sweep: {{seeds: 1}}
"""
VAE_SMALL = ["seed=3", "data.limit_train=200", "model.args.latent=2", "model.args.hidden=[16]",
             "training.epochs=2", "training.batch_size=50", "training.eval_batch_size=20", "training.verbose=0",
             "output.plots=false", "output.tensorboard=false"]


def test_a_one_member_sweep_of_an_objective_config_equals_fdl_train(tmp_path):
    root = pathlib.Path(__file__).resolve().parents[2]
    (tmp_path / "sweep.yaml").write_text(VAE_SWEEP.format(root=root))
    trained = train_from_config(load_config(root / "configs" / "vae.yaml",
                                            VAE_SMALL + [f"output.dir={tmp_path / 'run'}"]))
    swept = run_sweep(tmp_path / "sweep.yaml", overrides=VAE_SMALL, out_dir=tmp_path / "sweep", verbose=0)
    (row,), history = swept.rows, trained.history
    assert row["epochs"] == len(history) == 2
    for name in ("loss", "reconstruction", "kl"):  # the objective's logs, averaged per epoch, and val's
        np.testing.assert_allclose([row[f"final_{name}"], row[f"final_val_{name}"], row[f"test_{name}"]],
                                   [history[-1][name], history[-1][f"val_{name}"], trained.summary["test"][name]],
                                   rtol=1e-5, err_msg=name)


def test_a_sweep_refuses_a_sample_section_by_name():
    from omegaconf import OmegaConf

    from fdl.config import ConfigError
    from fdl.config.arguments import check_population_keys
    config = OmegaConf.create({"training": {"fused": True}, "sample": {"prompt": "The ", "length": 8}})
    with pytest.raises(ConfigError, match=r"^sample: a sweep writes no samples — remove the section"):
        check_population_keys(config)
