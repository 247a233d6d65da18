"""Smoke tests of configs/ and experiments/: every config loads and fits its data; programs run.

Fast on purpose (well under a minute on 2 CPU cores): the configs are only
built, and the end-to-end runs train one epoch on 200 examples. What they
catch: schema drift (a key a config still uses but the schema lost), a model
that no longer fits its data, and a script that no longer runs or writes
nonsense (metrics out of range, a missing samples PNG).
"""
import importlib.util
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import fdl
from fdl.config import ConfigError, build_data, build_model, load_config
from fdl.config import check_model_fits_data
from fdl.records import RunDir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
QUICK = ["--set", "training.epochs=1", "--set", "data.limit_train=200", "--set", "training.verbose=0",
         "--set", "output.tensorboard=false", "--set", "output.plots=false"]


def load_script(name: str):
    """experiments/<name>.py as a module (experiments/ is not a package).

    experiments/ goes on sys.path first, as when Python runs the script itself:
    the scripts import their shared scaffolding as `from program import ...`.
    """
    experiments = str(ROOT / "experiments")
    if experiments not in sys.path:
        sys.path.insert(0, experiments)
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configs_folder_holds_the_programs():
    names = {path.stem for path in CONFIGS}
    assert {"keras_binary", "pytorch_cnn", "keras_lstm", "caffe_autoencoder", "vae", "keras_mlp",
            "pytorch_mlp", "mnist1d_gru"} <= names


def _bases() -> set[str]:
    """File names other configs extend (`defaults:`): partial configs, without a model."""
    names = set()
    for path in CONFIGS:
        bases = yaml.safe_load(path.read_text()).get("defaults") or []
        names.update([bases] if isinstance(bases, str) else bases)
    return names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_its_model_fits_its_data(path):
    if path.name in _bases():  # only its keys can be checked: lend it a model
        load_config(path, ["model.name=logistic_regression"])
        return
    config = load_config(path)
    assert config.name == path.stem
    try:
        dataset = build_data(config.data, config.seed).dataset
    except ConfigError as error:  # data that needs a file this machine lacks (mnist, csv, ...)
        pytest.skip(f"{path.name}: {error}")
    model = build_model(config.model)
    out_shape = check_model_fits_data(model, dataset.feature_shape)
    table = fdl.summary(model, dataset.feature_shape)
    assert f"input {tuple(dataset.feature_shape)}" in table, table
    if config.objective is not None and config.objective.name == "masked_sequence_cross_entropy":
        # a language model: next-token logits at every position of the (context,) tokens
        assert out_shape == (*dataset.feature_shape, config.model.args.vocab_size), (path.name, out_shape)
    elif config.data.target == "input" or config.objective is not None:  # autoencoders: the reconstruction is the input's size
        reconstruction = out_shape[0] if isinstance(out_shape[0], tuple) else out_shape
        assert math.prod(reconstruction) == math.prod(dataset.feature_shape), (path.name, out_shape)
    elif config.loss.name == "binary_cross_entropy":
        assert out_shape == (1,), (path.name, out_shape)
    elif config.loss.name == "cross_entropy":
        assert out_shape == (dataset.num_classes,), (path.name, out_shape)


def _summary(run_dir) -> dict:
    return RunDir(run_dir).summary()


def _assert_accuracy_metrics(test: dict, names):
    for name in names:
        assert 0.0 <= test[name] <= 1.0, (name, test)
    assert math.isfinite(test["loss"])


# roc_auc left out of the quick run: its score buffer recompiles evaluation per split size (~4 s).
@pytest.mark.parametrize("name, extra", [
    ("pytorch_mlp", []),
    ("keras_binary_classifier", ["--set", "metrics=[accuracy,precision,recall,f1]"]),
])
def test_classifier_program_runs_end_to_end(name, extra, tmp_path):
    result = load_script(name).main([*QUICK, *extra, "--out", str(tmp_path / "run")])
    summary = _summary(result.run_dir)
    assert summary["epochs"] == 1
    _assert_accuracy_metrics(summary["test"], load_config(result.run_dir.config_path).metrics)


def test_vae_program_writes_finite_elbo_and_prior_samples(tmp_path):
    outcome = load_script("autoencoders").main(["--only", "vae", *QUICK, "--out", str(tmp_path)])["vae"]
    test = _summary(outcome["run_dir"])["test"]
    assert math.isfinite(test["loss"]) and test["loss"] > 0  # a -ELBO in nats
    assert math.isfinite(outcome["test_mse"])
    assert outcome["samples"].is_file() and outcome["samples"].stat().st_size > 1000


def _write_fake_mnist(directory: Path, train: int = 64, test: int = 16) -> Path:
    """Four IDX files of random 28x28 uint8 images and labels 0..9 (the MNIST layout)."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.arange(train, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(test, dtype=np.uint8) % 10}
    directory.mkdir()
    for stem, array in arrays.items():
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (directory / stem).write_bytes(header + array.tobytes())
    return directory


def test_mnist_flag_swaps_in_the_2d_cnn_and_image_samples(tmp_path):
    mnist = str(_write_fake_mnist(tmp_path / "mnist"))
    quick = [*QUICK, "--set", "training.batch_size=16", "--mnist", mnist]
    result = load_script("pytorch_cnn").main([*quick, "--out", str(tmp_path / "cnn")])
    config = load_config(result.run_dir.config_path)
    assert (config.data.name, config.model.name) == ("mnist", "cnn2d")
    _assert_accuracy_metrics(_summary(result.run_dir)["test"], ["accuracy"])
    vae = load_script("autoencoders").main(["--only", "vae", *quick, "--out", str(tmp_path / "ae")])["vae"]
    assert load_config(RunDir(vae["run_dir"]).config_path).objective.args.likelihood == "bernoulli"
    assert vae["samples"].is_file()
