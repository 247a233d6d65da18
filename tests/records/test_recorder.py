"""RunRecorder: metrics.jsonl equals the logs, TensorBoard and plots appear, missing extras only warn."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.records import RunRecorder, create_run_dir, read_scalars
from fdl.train.callbacks import Run


def test_metrics_jsonl_equals_the_logs(tmp_path, fit_loop, jsonable):
    recorder = RunRecorder(tmp_path / "run")
    history = fit_loop(recorder, epochs=3)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [jsonable(logs) for logs in history]
    assert sorted(p.name for p in (tmp_path / "run" / "plots").iterdir()) == [
        "accuracy.png", "learning_rate.png", "loss.png"]
    assert [s for s, _ in read_scalars(tmp_path / "run" / "tensorboard")["val/accuracy"]] == [10, 20, 30]


def test_a_resumed_run_records_the_restored_history_once(tmp_path, fit_loop, jsonable):
    recorder = RunRecorder(tmp_path, tensorboard=True, plots=False)
    history = fit_loop(recorder, epochs=3)  # killed after epoch 3 was recorded; its checkpoint holds epoch 1
    restored = Run(model=None, state=None, epochs=3, steps_per_epoch=1, history=[jsonable(history[0])])
    recorder.on_train_begin(restored)
    recorder.on_train_end(restored)
    assert [row["epoch"] for row in recorder.rows()] == [1]
    assert (tmp_path / "metrics.jsonl").read_text() == json.dumps(jsonable(history[0])) + "\n"
    assert {tag: [step for step, _ in values] for tag, values in read_scalars(tmp_path / "tensorboard").items()
            if tag == "train/loss"} == {"train/loss": [history[0].get("step", 1)]}


@pytest.mark.parametrize("module", ["tensorboardX", "matplotlib"])
def test_a_missing_extra_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, fit_loop, jsonable, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.warns(RuntimeWarning, match=f'{module} not installed .* pip install "fdl\\[records\\]"') as caught:
        recorder = RunRecorder(tmp_path)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further warning while the run goes on
        history = fit_loop(recorder, epochs=2)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [jsonable(logs) for logs in history]
    skipped = "tensorboard" if module == "tensorboardX" else "plots"
    assert not (tmp_path / skipped).exists()
    assert {"tensorboard", "plots"} - {skipped} <= {p.name for p in tmp_path.iterdir()}


def test_a_plotting_failure_warns_instead_of_raising(tmp_path, monkeypatch, fit_loop):
    def broken(rows, out_dir):
        raise RuntimeError("no fonts")

    monkeypatch.setattr("fdl.records.recorder.plot_history", broken)
    with pytest.warns(RuntimeWarning, match="could not draw plots.*RuntimeError: no fonts"):
        fit_loop(RunRecorder(tmp_path, tensorboard=False), epochs=1)


def test_import_loads_neither_matplotlib_nor_tensorboardx():
    code = "import sys, fdl.records; print('matplotlib' in sys.modules, 'tensorboardX' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"JAX_PLATFORMS": "cpu", "PATH": ""})
    assert result.stdout.split() == ["False", "False"]


def test_fit_with_a_recorder(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    run_dir = create_run_dir(tmp_path, "mlp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recorder adds no warning to a healthy run
        _, history = fdl.fit(nn.serial(nn.Dense(8), nn.Relu(), nn.Dense(2)), (x[:48], y[:48]),
                             val=(x[48:], y[48:]), epochs=2, batch_size=16, verbose=0,
                             metrics=["accuracy", "confusion_matrix"], callbacks=[RunRecorder(run_dir)])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1]["loss"] == history[1]["loss"]
    assert rows[1]["val_confusion_matrix"] == np.asarray(history[1]["val_confusion_matrix"]).tolist()
    scalars = read_scalars(run_dir / "tensorboard")
    assert scalars["train/loss"] == [(row["step"], float(np.float32(row["loss"]))) for row in rows]
    assert {"loss.png", "accuracy.png", "learning_rate.png"} <= {p.name for p in (run_dir / "plots").iterdir()}
