"""`fdl.load_run`: a run directory read back; its evaluations and predictions compile once."""
import numpy as np
import pytest

import fdl
from fdl.config import ConfigError, load_config
from fdl.runs import load_run, train_from_config

CONFIG = """
data: {name: mnist1d, limit_train: 200, val_fraction: 0.25, preprocess: standardize}
model: {name: mnist1d_mlp, args: {hidden: [8]}}
optimizer: {name: adam, learning_rate: 1e-2}
training: {epochs: 2, batch_size: 50, verbose: 0}
metrics: [accuracy, f1]
output: {tensorboard: false, plots: false}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    (folder / "c.yaml").write_text(CONFIG)
    return train_from_config(load_config(folder / "c.yaml", [f"output.dir={folder / 'run'}"]))


def test_a_loaded_run_evaluates_every_split_as_the_summary_did(trained):
    run = fdl.load_run(trained.run_dir.path, "last")
    for split in ("train", "val", "test"):
        scores = run.evaluate(split)
        for key in ("loss", "accuracy", "f1"):
            np.testing.assert_allclose(scores[key], trained.summary[split][key], rtol=1e-5)


def test_repeated_evaluations_compile_one_program(trained, compiles):
    run = load_run(trained.run_dir.path)
    run.evaluate("test")  # compiles the run's evaluation program
    with compiles.counting() as compiled:
        for split in ("test", "val", "test", "train"):
            run.evaluate(split)
    assert len(compiled) == 0


def test_predict_applies_the_runs_preprocessing_to_raw_inputs(trained):
    run = load_run(trained.run_dir.path)
    raw = fdl.data.load("mnist1d").test.x[:7]
    method, stats = run.run_dir.preprocess()
    standardized = (raw - stats["mean"]) / stats["scale"]
    expected = fdl.predict(run.model, run.state, standardized)
    np.testing.assert_allclose(run.predict(raw), expected, rtol=1e-5, atol=1e-6)
    assert method == "standardize"


def test_predict_input_errors_name_the_shape(trained):
    run = load_run(trained.run_dir.path)
    with pytest.raises(ValueError, match=r"x: shape \(40,\), the model expects \(n, 40\) \(one example\?"):
        run.predict(np.zeros(40, np.float32))
    with pytest.raises(ValueError, match="x: no examples"):
        run.predict(np.zeros((0, 40), np.float32))
    with pytest.raises(ValueError, match="split 'tset': this run's data has no tset split"):
        run.evaluate("tset")


def test_load_run_refuses_what_is_not_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="is not an fdl run directory"):
        load_run(tmp_path)
    with pytest.raises(ConfigError, match="checkpoint: expected 'best' or 'last'"):
        load_run(tmp_path, "middle")
