"""Damaged, missing and busy files, through the library and the `fdl` command: one line that names the file.

The command exits with status 2 and prints `fdl COMMAND: error: MESSAGE` on one line.
"""
import io
import os
import shutil

import numpy as np
import pytest

import fdl
from fdl.cli.main import main
from fdl.config import ConfigError, load_config
from fdl.data import load
from fdl.records.run_dir import RunDir

TINY = """# a second-long MLP run on 100 MNIST-1D examples
data: {name: mnist1d, limit_train: 100, val_fraction: 0.25, preprocess: standardize}
model: {name: mnist1d_mlp, args: {hidden: [8]}}
optimizer: {name: adam, learning_rate: 1e-2}
training: {epochs: 1, batch_size: 25, verbose: 0}
output: {tensorboard: false, plots: false}
"""


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, run directory): trained into a folder that a killed start-up left, and inputs x.npy."""
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "tiny.yaml").write_text(TINY)
    run_dir = folder / "run"
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 7\n")
    (run_dir / ".env.json.4242.0123abcd.tmp").write_text("{")
    assert main(["train", str(folder / "tiny.yaml"), "--out", str(run_dir)]) == 0
    np.save(folder / "x.npy", load("mnist1d").test.x[:5])
    return folder, run_dir


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run directory, to damage."""
    return shutil.copytree(trained[1], tmp_path / "run")


def test_train_reuses_a_folder_that_a_killed_start_up_left(trained):
    _, run_dir = trained
    assert "limit_train: 100" in (run_dir / "config.yaml").read_text()
    assert not list(run_dir.glob("*.tmp"))
    assert (run_dir / "summary.json").is_file() and (run_dir / "metrics.jsonl").read_text().count("\n") == 1


def test_train_refuses_a_folder_that_holds_a_run(trained, run_copy, capsys):
    folder, _ = trained
    assert main(["train", str(folder / "tiny.yaml"), "--out", str(run_copy)]) == 2
    assert error_line(capsys) == (f"fdl train: error: output.dir: run directory {str(run_copy)!r} already "
                                  "holds files — choose a new folder, or leave output.dir unset for "
                                  "runs/<name>-<timestamp>")


def test_train_refuses_a_run_directory_another_process_holds(trained, tmp_path, capsys):
    folder, _ = trained
    busy = RunDir(tmp_path / "busy")
    with busy.lock():  # locks are per open file: this process counts as another holder
        assert main(["train", str(folder / "tiny.yaml"), "--out", str(busy.path)]) == 2
    assert error_line(capsys) == (f"fdl train: error: run directory {str(busy.path)!r} is in use by process "
                                  f"{os.getpid()} (it holds {busy.lock_path}) — wait for it to finish or pass "
                                  "another --out")


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


RESTORE = "restore it from a copy of the run directory, or train the run again"
DAMAGES = {  # name: (what is written to preprocess.npz (None: deleted), the error, its message after the path)
    "missing": (None, FileNotFoundError,
                f"missing, but the run's config sets data.preprocess: standardize — {RESTORE}"),
    "truncated": (lambda saved: saved[:len(saved) // 2], ValueError,
                  f"damaged (not an .npz archive) — {RESTORE}"),
    "not a zip": (lambda saved: b"PK not a zip", ValueError, f"damaged (not an .npz archive) — {RESTORE}"),
    "a missing key": (lambda saved: _npz(method=np.array("standardize"), mean=np.zeros(40, np.float32)),
                      ValueError, "damaged (holds standardize statistics mean; the config's standardize needs "
                                  f"mean, scale) — {RESTORE}"),
    "no method": (lambda saved: _npz(mean=np.zeros(40), scale=np.ones(40)), ValueError,
                  f"damaged (no method) — {RESTORE}"),
    "another shape": (lambda saved: _npz(method=np.array("standardize"), mean=np.zeros(3), scale=np.ones(3)),
                      ValueError, f"damaged (mean has shape (3,), the inputs (40,)) — {RESTORE}"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_predict_refuses_a_missing_or_damaged_preprocess_npz(trained, run_copy, capsys, damage):
    folder, _ = trained
    rewrite, error, detail = DAMAGES[damage]
    path = run_copy / "preprocess.npz"
    if rewrite is None:
        path.unlink()
    else:
        path.write_bytes(rewrite(path.read_bytes()))
    message = f"{path}: {detail}"
    run = fdl.load_run(run_copy)
    with pytest.raises(error) as raised:
        run.predict(np.load(folder / "x.npy"))
    assert str(raised.value) == message
    assert main(["predict", str(run_copy), str(folder / "x.npy")]) == 2
    assert error_line(capsys) == f"fdl predict: error: {message}"


def test_a_run_without_preprocessing_predicts_raw_inputs_without_preprocess_npz(trained, run_copy):
    folder, _ = trained
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("preprocess: standardize", "preprocess: null"))
    (run_copy / "preprocess.npz").unlink()
    run = fdl.load_run(run_copy)
    x = np.load(folder / "x.npy")
    assert run.preprocessing is None
    np.testing.assert_allclose(run.predict(x), fdl.predict(run.model, run.state, x), rtol=1e-5, atol=1e-6)


NOT_UTF8 = b"# tiny\nname: caf\xe9\n"  # Latin-1: byte 16 is 0xe9


def test_a_config_that_is_not_utf8_names_the_file_and_the_byte(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(NOT_UTF8 + TINY.encode())
    message = f"{path}: not UTF-8 at byte 16 (line 2, byte 0xe9) — save the file as UTF-8"
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == message
    for command in ("train", "summary"):
        assert main([command, str(path)]) == 2
        assert error_line(capsys) == f"fdl {command}: error: {message}"


def test_a_base_config_that_is_not_utf8_is_named_itself(tmp_path):
    (tmp_path / "base.yaml").write_bytes(NOT_UTF8)
    (tmp_path / "run.yaml").write_text("defaults: base.yaml\n" + TINY)
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'base.yaml'}: not UTF-8 at byte 16 "):
        load_config(tmp_path / "run.yaml")


@pytest.mark.parametrize("text,detail", [
    ("model:\n\tname: mnist1d_mlp\n",
     "line 2: not valid YAML (found character '\\t' that cannot start any token)"),
    ("model: [mnist1d_mlp\nseed: 0\n", "line 2: not valid YAML (expected ',' or ']', but got ':')"),
    ("seed: 0\nname: a\x00b\n", "line 2: not valid YAML (character #x0000 is not allowed)"),
])
def test_a_config_that_is_not_yaml_names_the_file_and_the_line(tmp_path, capsys, text, detail):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"{path} {detail}"
    assert main(["train", str(path)]) == 2
    assert error_line(capsys) == f"fdl train: error: {path} {detail}"
