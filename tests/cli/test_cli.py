"""The `fdl` command end to end on a tiny config: train -> eval -> predict, every file checked."""
import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from fdl.cli.main import main
from fdl.records import read_scalars

TINY = """# tiny: a seconds-long MLP run on 400 MNIST-1D examples
data: {name: mnist1d, limit_train: 400, val_fraction: 0.25, preprocess: standardize}
model: {name: mnist1d_mlp, args: {hidden: [16]}}
optimizer: {name: adam, learning_rate: 1e-2}
training: {epochs: 3, batch_size: 50, verbose: 0}
metrics: [accuracy, f1]
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "tiny.yaml"
    config.write_text(TINY)
    run_dir = folder / "run"
    assert main(["train", str(config), "--out", str(run_dir), "--set", "seed=1"]) == 0
    return folder, run_dir


def test_train_writes_a_complete_run_directory(trained):
    _, run_dir = trained
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "time_s"} <= set(rows[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= {"train", "val", "test", "epochs", "steps", "wall_time_s", "steps_per_s"}
    assert summary["epochs"] == 3 and summary["steps"] == 3 * (300 // 50)
    assert 0 <= summary["test"]["accuracy"] <= 1 and "loss" in summary["test"]
    config_text = (run_dir / "config.yaml").read_text()
    assert "seed: 1" in config_text and "limit_train: 400" in config_text
    env = json.loads((run_dir / "env.json").read_text())
    assert env["seed"] == 1 and len(env["config_sha256"]) == 64
    for name in ("loss", "accuracy", "f1", "confusion_matrix"):
        image = matplotlib.image.imread(run_dir / "plots" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100
    scalars = read_scalars(run_dir / "tensorboard")
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [r["loss"] for r in rows], rtol=1e-6)
    newest = max(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert newest == summary["steps"] and {"state", "best", "meta"} <= {p.name for p in (run_dir / "checkpoints" / str(newest)).iterdir()}
    assert (run_dir / "preprocess.npz").is_file()


def test_eval_reproduces_the_summary_of_the_best_checkpoint(trained, capsys):
    _, run_dir = trained
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--split", "test", "--checkpoint", "last"]) == 0
    scores = json.loads(capsys.readouterr().out)["test"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert scores["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-6)
    assert json.loads((run_dir / "eval_test.json").read_text())["accuracy"] == scores["accuracy"]


def test_predict_applies_the_saved_preprocessing(trained, capsys):
    folder, run_dir = trained
    from fdl.data import load
    x = load("mnist1d").test.x[:7]
    np.save(folder / "x.npy", x)
    assert main(["predict", str(run_dir), str(folder / "x.npy"), "--out", str(folder / "p.npy"),
                 "--checkpoint", "last"]) == 0
    predictions = np.load(folder / "p.npy")
    assert predictions.shape == (7, 10)
    import fdl
    run = fdl.load_run(run_dir, "last")
    expected = fdl.predict(run.model, run.state, run.arguments.data.dataset.test.x[:7])
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("argv,message", [
    (["train", "missing.yaml"], "fdl train: error: config file 'missing.yaml' does not exist"),
    (["eval", "."], "fdl eval: error: '.' is not an fdl run directory"),
])
def test_bad_input_exits_non_zero_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_predict_rejects_a_wrong_input_shape(trained, capsys):
    folder, run_dir = trained
    np.save(folder / "bad.npy", np.zeros((3, 30), np.float32))
    assert main(["predict", str(run_dir), str(folder / "bad.npy")]) == 2
    assert "bad.npy': x: shape (3, 30), the model expects (n, 40)" in capsys.readouterr().err


def test_unknown_config_key_through_the_console_script(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(TINY.replace("learning_rate", "learnig_rate"))
    done = subprocess.run([sys.executable, "-m", "fdl.cli.main", "train", str(config)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "optimizer.learnig_rate: unknown key — did you mean optimizer.learning_rate?" in done.stderr


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "fdl train configs/mnist1d_cnn.yaml" in capsys.readouterr().out


def test_resume_continues_a_run_exactly(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("epochs: 3", "epochs: 4"))
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert main(["train", str(config), "--out", str(straight)]) == 0
    assert main(["train", str(config), "--out", str(part), "--set", "training.epochs=2"]) == 0
    assert main(["train", "--resume", str(part), "--set", "training.epochs=4"]) == 0
    rows = lambda d: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["epoch"] for r in rows(part)] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["val_loss"] for r in rows(part)], [r["val_loss"] for r in rows(straight)],
                               rtol=1e-6)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, part)]
    assert summaries[0]["test"] == summaries[1]["test"] and summaries[1]["epochs"] == 4


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "--resume: " in (err := capsys.readouterr().err) and "is not an fdl run directory" in err
    assert main(["train"]) == 2
    assert "needs a CONFIG file, or --resume RUN_DIR" in capsys.readouterr().err
