"""MLflowLogger: a 2-epoch fit logged to local MLflow stores and read back with MlflowClient; its config key.

Two local stores: the folder ("file:") store the issue names, which MLflow 3 opens only with
MLFLOW_ALLOW_FILE_STORE=true, and SQLite, MLflow 3's own local store (needs sqlalchemy).
"""
import sys

import numpy as np
import pytest

import fdl
from fdl.config import ConfigError, load_config
from fdl.config.build import build_mlflow_logger
from fdl.records.mlflow import MLflowLogger
from fdl.train.callbacks import Run

pytest.importorskip("mlflow", reason='MLflow is not installed — pip install "fdl[mlflow]"')
from mlflow.tracking import MlflowClient  # noqa: E402

PARAMS = {"model": {"hidden": [8]}, "optimizer": {"name": "adam", "learning_rate": 0.01}, "note": None}


@pytest.fixture(scope="module")
def file_store():
    """MLflow 3 refuses the folder store unless this is set (it points to SQLite instead)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        yield


def store_uri(kind: str, folder) -> str:
    if kind == "sqlite":
        pytest.importorskip("sqlalchemy", reason="MLflow's SQLite store needs sqlalchemy — pip install sqlalchemy")
        return f"sqlite:///{folder / 'mlflow.db'}"
    return (folder / "mlruns").as_uri()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, file_store):
    """One tiny fit logged by two loggers, one per store: (history, test scores, {kind: (uri, logger)})."""
    folder = tmp_path_factory.mktemp("mlflow")
    loggers = {}
    for kind in ("file", "sqlite"):
        uri = store_uri(kind, folder)
        loggers[kind] = uri, MLflowLogger(uri, experiment="tiny", run_name="mlp", params=PARAMS, tags={"team": "a"})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = fdl.nn.serial(fdl.nn.Dense(8), fdl.nn.Relu(), fdl.nn.Dense(2))
    state, history = fdl.fit(model, (x[:48], y[:48]), val=(x[48:], y[48:]), epochs=2, batch_size=16,
                             metrics=["accuracy"], callbacks=[logger for _, logger in loggers.values()],
                             verbose=0, seed=0)
    test = fdl.evaluate(model, state, (x[48:], y[48:]), metrics=["accuracy"])
    for _, logger in loggers.values():
        logger.log_summary({"test": test, "epochs": 2, "wall_time_s": 1.5, "error": "not a number"})
    return list(history), test, loggers


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_the_metric_history_is_the_fits_history(fitted, kind):
    history, _, loggers = fitted
    uri, logger = loggers[kind]
    client = MlflowClient(uri)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        logged = [(m.step, m.value) for m in client.get_metric_history(logger.run_id, key)]
        assert logged == [(logs["epoch"], logs[key]) for logs in history], key
    assert client.get_metric_history(logger.run_id, "epoch") == []  # the x axis is the step


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_params_tags_summary_and_status(fitted, kind):
    _, test, loggers = fitted
    uri, logger = loggers[kind]
    run = MlflowClient(uri).get_run(logger.run_id)
    assert run.data.params == {"model.hidden": "[8]", "optimizer.name": "adam", "optimizer.learning_rate": "0.01",
                               "note": "null"}
    assert run.data.tags["team"] == "a" and run.info.run_name == "mlp" and run.info.status == "FINISHED"
    assert MlflowClient(uri).get_experiment(run.info.experiment_id).name == "tiny"
    summary = {key: value for key, value in run.data.metrics.items() if key.startswith("summary.")}
    assert summary == {"summary.test.loss": float(test["loss"]), "summary.test.accuracy": float(test["accuracy"]),
                       "summary.epochs": 2.0, "summary.wall_time_s": 1.5}  # the error text is no metric


def test_a_resumed_run_logs_its_earlier_epochs_and_a_failed_one_says_so(tmp_path, file_store):
    logger = MLflowLogger(store_uri("file", tmp_path), experiment="resumed")
    run = Run(model=None, state=None, epochs=3, steps_per_epoch=5, history=[{"epoch": 1, "loss": 2.0}], epoch=1)
    logger.on_train_begin(run)  # what a resumed fit calls with the checkpoint's history
    logger.on_epoch_end(run, 2, {"epoch": 2, "loss": 1.5, "per_class": [0.1, 0.2]})
    run.epoch = 2
    logger.on_train_end(run)  # fit ended before epoch 3 and no callback stopped it: an error
    client = MlflowClient(store_uri("file", tmp_path))
    assert [(m.step, m.value) for m in client.get_metric_history(logger.run_id, "loss")] == [(1, 2.0), (2, 1.5)]
    got = client.get_run(logger.run_id)
    assert got.info.status == "FAILED" and sorted(got.data.metrics) == ["loss"]
    assert got.data.params == {"epochs": "3", "steps_per_epoch": "5"}  # no params given: the fit's


def test_a_store_mlflow_refuses_is_one_line_naming_the_uri():
    with pytest.raises(ValueError, match=r"^MLflowLogger: tracking_uri 'nosuch://x', experiment 'e': "
                                         r"[^\n]*unsupported URI 'nosuch://x'[^\n]*$"):
        MLflowLogger("nosuch://x", "e")


def test_a_missing_mlflow_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    with pytest.raises(ImportError, match=r'^MLflowLogger needs mlflow — pip install "fdl\[mlflow\]"$'):
        MLflowLogger("sqlite:///unused.db")


def test_output_mlflow_builds_a_logger_of_the_whole_config(tmp_path, file_store):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nmodel: {name: mnist1d_mlp}\noptimizer: {name: adam, learning_rate: 0.003}\n"
                    f"output: {{mlflow: {{tracking_uri: '{store_uri('file', tmp_path)}'}}}}\n")
    logger = build_mlflow_logger(load_config(path), run_name="tiny-20261125-101500")
    assert logger.params["optimizer.learning_rate"] == 0.003 and logger.params["name"] == "tiny"
    assert logger.params["output.mlflow.tracking_uri"] == store_uri("file", tmp_path)
    assert logger.run_name == "tiny-20261125-101500"
    assert logger.client.get_experiment(logger.experiment_id).name == "tiny"  # the config's name
    assert build_mlflow_logger(load_config(path, ["output.mlflow=null"])) is None
    with pytest.raises(ConfigError, match=r"^output.mlflow: MLflowLogger: tracking_uri 'nosuch://x', experiment "
                                          r"'tiny': "):
        build_mlflow_logger(load_config(path, ["output.mlflow.tracking_uri=nosuch://x"]))


def test_fdl_train_logs_the_run_output_mlflow_names(tmp_path, file_store):
    import json
    from fdl.records import read_jsonl
    from fdl.runs import train_from_config

    uri = store_uri("file", tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\ndata: {name: mnist1d, limit_train: 200, val_fraction: 0.25}\n"
                    "model: {name: mnist1d_mlp, args: {hidden: [8]}}\ntraining: {epochs: 2, batch_size: 50, verbose: 0}\n"
                    f"output: {{dir: '{tmp_path / 'run'}', tensorboard: false, plots: false, mlflow: {{tracking_uri: '{uri}'}}}}\n")
    run_dir = train_from_config(load_config(path)).run_dir
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")] == \
        [(logs["epoch"], logs["val_loss"]) for logs in read_jsonl(run_dir.metrics_path)]
    assert run.data.metrics["summary.test.accuracy"] == run_dir.summary()["test"]["accuracy"]
    assert run.info.run_name == "run" and run.data.tags["fdl.run_dir"] == str(run_dir.path.resolve())
    assert run.data.params["model.args.hidden"] == json.dumps([8]) and run.info.status == "FINISHED"
