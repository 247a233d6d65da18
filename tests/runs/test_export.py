"""`fdl export` / `fdl.export`: StableHLO and ONNX exports predict what `fdl predict` predicts.

References: `fdl.load_run(run_dir).predict(x)` (what `fdl predict` prints) on raw MNIST-1D
inputs, for the session's four shipped runs (an MLP and a BatchNorm MLP with fitted
standardization, the CNN, the bidirectional GRU). Tolerance 1e-5: float32 rounding of the
same program compiled apart (measured differences ~2e-7).
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import optax
import pytest

import fdl
from fdl.cli.main import main
from fdl.nn.conv import default_implementation
import fdl.runs.export as export_module
from fdl.runs.export import export, load_export

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def runs(shipped_runs):
    return {name: fdl.load_run(path) for name, path in shipped_runs.items()}


@pytest.fixture(scope="module")
def x():
    return fdl.data.load("mnist1d").test.x[:7]


@pytest.fixture(scope="module")
def mlp_export(runs, tmp_path_factory):
    """The MLP run (standardize folded in) exported as StableHLO with a dynamic batch."""
    return export(runs["mlp"], out=tmp_path_factory.mktemp("exports") / "mlp.export")


@pytest.mark.parametrize("name", ["mlp", "cnn", "gru", "batchnorm"])
def test_stablehlo_predicts_what_fdl_predict_does(name, runs, x, tmp_path):
    run = runs[name]
    expected = run.predict(x)
    predict, metadata = load_export(export(run, out=tmp_path / "dynamic"))
    assert metadata["batch"] == "dynamic"
    np.testing.assert_allclose(predict(x), expected, **TOLERANCE)
    np.testing.assert_allclose(predict(x[:1]), expected[:1], **TOLERANCE)

    fixed, metadata = load_export(export(run, batch=7, out=tmp_path / "fixed"))
    assert metadata["batch"] == 7
    np.testing.assert_allclose(fixed(x), expected, **TOLERANCE)
    with pytest.raises(ValueError, match=r"^x: 1 rows, this export takes a fixed batch of 7 — give 7 rows, or "
                                         r"export with a dynamic batch \(--batch dynamic\)$"):
        fixed(x[:1])


@pytest.mark.parametrize("name,batch", [("mlp", "dynamic"), ("batchnorm", "dynamic"), ("cnn", 7), ("cnn", 1)])
def test_onnx_predicts_what_fdl_predict_does(name, batch, runs, x, tmp_path):
    import onnxruntime

    run = runs[name]
    folder = export(run, format="onnx", batch=batch, out=tmp_path / "onnx")
    expected = run.predict(x)  # after the export: jax2onnx's traces must not linger in JAX's caches
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    sizes = [1, 7] if batch == "dynamic" else [batch]
    for n in sizes:
        got = session.run(None, {"x": x[:n]})[0]
        np.testing.assert_allclose(got, expected[:n], **TOLERANCE)
    predict, metadata = load_export(folder)
    np.testing.assert_allclose(predict(x[:sizes[-1]]), expected[:sizes[-1]], **TOLERANCE)
    assert (metadata["format"], metadata["file"], metadata["batch"]) == ("onnx", "model.onnx", batch)


def test_an_onnx_export_names_the_layer_jax2onnx_cannot_convert(runs, tmp_path):
    with pytest.raises(ValueError, match=r"^serial\[1\] GRU \(params gru_1\): jax2onnx cannot convert it to ONNX "
                                         r"\(Reverse scan is not supported in IR pipeline\.\) — export it as "
                                         r"StableHLO instead \(--format stablehlo\), which takes every fdl layer$"):
        export(runs["gru"], format="onnx", batch=7, out=tmp_path / "gru")
    assert not (tmp_path / "gru").exists()


@pytest.mark.skipif(default_implementation() != "patches", reason="Conv's im2col implementation is the CPU default")
def test_a_conv_that_needs_a_fixed_batch_for_onnx_says_so(runs, tmp_path):
    with pytest.raises(ValueError, match=r"^serial\[1\] Conv1D \(params conv1d_1\): jax2onnx cannot convert it to "
                                         r"ONNX \(Symbolic dimension 'batch' .*\) — export it with a fixed batch "
                                         r"\(--batch N\), or as StableHLO \(--format stablehlo\)$"):
        export(runs["cnn"], format="onnx", out=tmp_path / "cnn")


def _state(model, input_shape):
    return fdl.init_train_state(model, input_shape, optax.sgd(0.1), seed=0)


def test_an_onnx_graph_onnxruntime_refuses_is_named(tmp_path):
    model = fdl.nn.serial(fdl.nn.Reshape((5, 5, 2)), fdl.nn.MaxPool2D(3, strides=2, padding="SAME"), fdl.nn.Flatten())
    with pytest.raises(ValueError, match=r"^serial\[1\] MaxPool2D \(params max_pool2d_1\): onnxruntime cannot run "
                                         r"its ONNX graph \(.*Unsupported pooling size\.\) — export it as StableHLO"):
        export(model, _state(model, (50,)), input_shape=(50,), format="onnx", batch=2, out=tmp_path / "pool")


def test_an_onnx_graph_that_computes_other_numbers_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "ONNX_TOLERANCE", -1.0)  # every graph "differs": the check's own path
    model = fdl.nn.serial(fdl.nn.Dense(3))
    with pytest.raises(ValueError, match=r"^serial\[0\] Dense \(params dense_0\): its ONNX graph computes other "
                                         r"numbers than JAX \(by up to .*\) — export it as StableHLO"):
        export(model, _state(model, (4,)), input_shape=(4,), format="onnx", batch=2, out=tmp_path / "dense")


def test_a_missing_export_extra_is_one_line(runs, tmp_path, monkeypatch):
    export_module._onnx_tools.cache_clear()
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    try:
        with pytest.raises(ModuleNotFoundError, match=r'^format onnx needs jax2onnx — pip install "fdl\[export\]"$'):
            export(runs["mlp"], format="onnx", out=tmp_path / "mlp")
    finally:
        export_module._onnx_tools.cache_clear()


def test_the_metadata_describes_the_export(mlp_export, shipped_runs):
    metadata = json.loads((mlp_export / "metadata.json").read_text())
    environment = json.loads((shipped_runs["mlp"] / "env.json").read_text())
    assert sorted(path.name for path in mlp_export.iterdir()) == ["metadata.json", "model.jaxexport"]
    assert {key: metadata[key] for key in ("format", "file", "batch", "input_name", "input_shape", "input_dtype",
                                           "output_shape", "output_kind", "num_classes", "preprocessing",
                                           "platforms")} == {
        "format": "stablehlo", "file": "model.jaxexport", "batch": "dynamic", "input_name": "x", "input_shape": [40],
        "input_dtype": "float32", "output_shape": [10], "output_kind": "logits", "num_classes": 10,
        "preprocessing": "standardize", "platforms": ["cpu", "cuda"]}
    assert metadata["class_names"] == [str(digit) for digit in range(10)]
    assert metadata["config_sha256"] == environment["config_sha256"]
    assert metadata["versions"]["fdl"] == environment["versions"]["fdl"]


NO_FDL = """
import json, sys
class NoFdl:  # every import of fdl fails: the export must not need it
    def find_spec(self, name, path=None, target=None):
        if name == "fdl" or name.startswith("fdl."):
            raise ImportError(f"{name} is blocked in this process")
sys.meta_path.insert(0, NoFdl())
try:
    import fdl
    sys.exit("fdl imported")
except ImportError:
    pass
import jax, numpy as np
folder, inputs, outputs = sys.argv[1:]
metadata = json.load(open(f"{folder}/metadata.json"))
exported = jax.export.deserialize(bytearray(open(f"{folder}/{metadata['file']}", "rb").read()))
np.save(outputs, np.asarray(exported.call(np.load(inputs).astype(metadata["input_dtype"]))))
"""


def test_a_stablehlo_export_runs_in_a_process_that_cannot_import_fdl(mlp_export, runs, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", NO_FDL, str(mlp_export), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), runs["mlp"].predict(x), **TOLERANCE)


def test_a_layer_and_its_state_export_in_inference_mode(tmp_path):
    model = fdl.nn.serial(fdl.nn.Dense(3), fdl.nn.Dropout(0.5))
    state = _state(model, (4,))
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    predict, metadata = load_export(export(model, state, input_shape=(4,), class_names=["a", "b", "c"],
                                           out=tmp_path / "dense"))
    dense = state.params["dense_0"]
    np.testing.assert_allclose(predict(x), x @ np.asarray(dense["w"]) + np.asarray(dense["b"]), **TOLERANCE)
    assert (metadata["class_names"], metadata["num_classes"], metadata["preprocessing"]) == (["a", "b", "c"], 3, None)


def test_export_argument_errors_are_one_line(runs, tmp_path):
    run = runs["mlp"]
    with pytest.raises(ValueError, match=r"^format: expected one of stablehlo, onnx, got 'tflite'$"):
        export(run, format="tflite", out=tmp_path / "a")
    with pytest.raises(ValueError, match=r"^batch: expected 'dynamic' or a whole number >= 1, got 0$"):
        export(run, batch=0, out=tmp_path / "a")
    with pytest.raises(TypeError, match=r"^fdl.export: input_shape is missing — give the per-example shape"):
        export(run.model, run.state, out=tmp_path / "a")
    with pytest.raises(TypeError, match=r"^fdl.export: a LoadedRun brings its own state, .* — drop state$"):
        export(run, run.state, out=tmp_path / "a")
    with pytest.raises(ValueError, match=r"^fdl.export: examples of shape \(41,\) need params\['dense_1'\]\['w'\]"):
        export(run.model, run.state, input_shape=(41,), out=tmp_path / "a")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"the folder holds other files — export into a new or empty folder"):
        export(run, out=tmp_path / "busy")


def test_load_export_errors_name_the_file(mlp_export, tmp_path):
    predict, _ = load_export(mlp_export)
    with pytest.raises(ValueError, match=r"^x: shape \(40,\), this export takes \(n, 40\) — one example\? add a "
                                         r"leading axis: x\[None\]$"):
        predict(np.zeros(40))
    with pytest.raises(FileNotFoundError, match=r"metadata.json: missing — not a folder written by fdl export$"):
        load_export(tmp_path)
    broken = shutil.copytree(mlp_export, tmp_path / "broken")
    (broken / "model.jaxexport").write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match=r"model.jaxexport: not a jax.export serialization \(.*\) — export the model "
                                         r"again$"):
        load_export(broken)
    (broken / "model.jaxexport").unlink()
    with pytest.raises(FileNotFoundError, match=r"model.jaxexport: missing, but .*metadata.json names it"):
        load_export(broken)
    (broken / "metadata.json").write_text("{")
    with pytest.raises(ValueError, match=r"metadata.json: not JSON \(.*\) — export the model again$"):
        load_export(broken)
    (broken / "metadata.json").write_text('{"format": "tflite"}')
    with pytest.raises(ValueError, match=r"metadata.json: not the metadata of an fdl export"):
        load_export(broken)
    (broken / "metadata.json").write_text('{"format": "onnx", "file": "model.onnx"}')
    (broken / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"model.onnx: not an ONNX model onnxruntime can load \(.*\) — export the "
                                         r"model again$"):
        load_export(broken)


def test_the_command_writes_beside_the_run_and_refuses_a_bad_batch(shipped_runs, runs, x, tmp_path, capsys):
    run_dir = shutil.copytree(shipped_runs["batchnorm"], tmp_path / "run")  # the shipped runs stay unwritten
    assert main(["export", str(run_dir), "--batch", "7"]) == 0
    assert "stablehlo export (batch 7, best checkpoint) written to" in capsys.readouterr().out
    predict, _ = load_export(run_dir / "export" / "stablehlo")
    np.testing.assert_allclose(predict(x), runs["batchnorm"].predict(x), **TOLERANCE)

    assert main(["export", str(run_dir), "--batch", "seven"]) == 2
    assert capsys.readouterr().err == ("fdl export: error: batch: expected 'dynamic' or a whole number >= 1, "
                                       "got 'seven'\n")
