"""`fdl.save` / `fdl.load`: a self-describing model folder; a round trip predicts as before.

References: `fdl.load_run(run_dir).predict(x)` for the shipped runs (the same compiled
program on the same arrays: equal exactly), and `fdl.predict` on hand-standardized inputs
for a model saved from its spec.
"""
import dataclasses
import json
import shutil

import numpy as np
import optax
import pytest

import fdl
from fdl.config import ConfigError
from fdl.data import StandardizeStats
from fdl.runs import load, save
from fdl.runs.saved import input_dtype_of, model_spec
from fdl.train import CheckpointError

SPEC = {"layers": [{"Dense": {"features": 5}}, "Relu", {"Dense": {"features": 3}}]}


@pytest.fixture(scope="module")
def x():
    return fdl.data.load("mnist1d").test.x[:7]


@pytest.fixture(scope="module")
def saved_mlp(shipped_runs, tmp_path_factory):
    """The shipped MLP run (standardize, '0'..'9') saved from its LoadedRun, and that run."""
    run = fdl.load_run(shipped_runs["mlp"])
    return save(run, tmp_path_factory.mktemp("saved") / "mlp"), run


@pytest.mark.parametrize("name", ["mlp", "batchnorm"])
def test_a_saved_run_predicts_as_the_run_does(name, shipped_runs, x, tmp_path):
    run = fdl.load_run(shipped_runs[name])
    saved = load(save(run, tmp_path / name))
    np.testing.assert_array_equal(saved.predict(x), run.predict(x))
    assert saved.spec == model_spec(run.config)
    assert (saved.input_shape, saved.input_dtype, saved.preprocessing[0]) == ((40,), "float32", "standardize")
    assert saved.class_names == tuple(str(digit) for digit in range(10))


def test_model_json_describes_the_folder(saved_mlp, shipped_runs):
    folder, _ = saved_mlp
    description = json.loads((folder / "model.json").read_text())
    environment = json.loads((shipped_runs["mlp"] / "env.json").read_text())
    assert sorted(path.name for path in folder.iterdir()) == ["model.json", "weights"]
    assert {key: description[key] for key in ("format", "version", "model", "input_shape", "input_dtype",
                                              "preprocessing")} == {
        "format": "fdl.saved_model", "version": 1, "model": {"name": "mnist1d_mlp", "args": {"hidden": [16]}},
        "input_shape": [40], "input_dtype": "float32", "preprocessing": "standardize"}
    assert description["config_sha256"] == environment["config_sha256"]


def _state(model, input_shape, seed=0):
    return fdl.init_train_state(model, input_shape, optax.sgd(0.1), seed=seed)


def test_a_model_saved_from_its_spec_predicts_as_before(x, tmp_path):
    model = fdl.config.build_layer({"serial": SPEC["layers"]})
    state = _state(model, (40,))
    stats = StandardizeStats(np.full(40, 0.5, np.float32), np.full(40, 2.0, np.float32))
    save(SPEC, state, tmp_path / "m", input_shape=(40,), preprocessing=("standardize", stats),
         class_names=["a", "b", "c"])
    saved = load(tmp_path / "m")
    np.testing.assert_allclose(saved.predict(x), fdl.predict(model, state, (x - 0.5) / 2.0), rtol=1e-6, atol=1e-6)
    assert saved.class_names == ("a", "b", "c") and saved.spec == SPEC
    save(saved, tmp_path / "m")  # a SavedModel saves again, over the earlier save
    np.testing.assert_array_equal(load(tmp_path / "m").predict(x), saved.predict(x))


def test_save_argument_errors_are_one_line(saved_mlp, tmp_path):
    _, run = saved_mlp
    model = fdl.config.build_layer({"serial": SPEC["layers"]})
    state = _state(model, (40,))
    stats = StandardizeStats(np.zeros(40, np.float32), np.ones(40, np.float32))
    cases = [
        ((model, state, tmp_path / "a"), {"input_shape": (40,)}, TypeError,
         r"^fdl.save: got a Layer, but fdl.save stores the model's spec, not code — give its model section"),
        ((SPEC, state, tmp_path / "a"), {}, TypeError, r"^fdl.save: input_shape is missing"),
        ((SPEC, None, tmp_path / "a"), {"input_shape": (40,)}, TypeError,
         r"^fdl.save: state must be a TrainState \(with params and model_state\), got NoneType$"),
        ((SPEC, state), {"input_shape": (40,)}, TypeError, r"^fdl.save: path is missing"),
        ((run, tmp_path / "a"), {"class_names": ["x"]}, TypeError,
         r"^fdl.save: a LoadedRun brings its own state, .* — drop class_names$"),
        ((SPEC, state, tmp_path / "a"), {"input_shape": (41,)}, ValueError,
         r"^fdl.save: examples of shape \(41,\) need params\['dense_0'\]\['w'\] of shape \(41, 5\)"),
        (({"layers": [{"Dense": {"features": 3, "widht": 2}}]}, state, tmp_path / "a"), {"input_shape": (40,)},
         ConfigError, r"^fdl.save: model_spec: model.layers\[0\] Dense: .*widht"),
        ((SPEC, state, tmp_path / "a"), {"input_shape": (40,), "class_names": ["a", "b"]}, ValueError,
         r"^fdl.save: 2 class_names, but the model's outputs have shape \(3,\) — give one name per output$"),
        ((SPEC, state, tmp_path / "a"), {"input_shape": (40,), "preprocessing": stats}, TypeError,
         r"^fdl.save: preprocessing must be \(method, statistics\), e.g. run.preprocessing, got StandardizeStats$"),
        ((SPEC, state, tmp_path / "a"), {"input_shape": (40,), "preprocessing": ("scale", stats)}, ValueError,
         r"^fdl.save: preprocessing method 'scale' — expected one of standardize, min_max$"),
        ((SPEC, state, tmp_path / "a"), {"input_shape": (40,), "preprocessing": ("min_max", stats)}, ValueError,
         r"^fdl.save: preprocessing min_max takes statistics \{'minimum': \(40,\), 'scale': \(40,\)\}, got "
         r"\{'mean': \(40,\), 'scale': \(40,\)\} — pass run.preprocessing"),
        ((SPEC, state, tmp_path / "a"), {"input_shape": (40,), "input_dtype": "int8"}, ValueError,
         r"^fdl.save: input_dtype must be one of float32, int32, got 'int8'$"),
        (("mlp", state, tmp_path / "a"), {"input_shape": (40,)}, TypeError,
         r"^fdl.save: expected a model spec dict, a Layer, a LoadedRun or a SavedModel, got str$"),
    ]
    for args, kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            save(*args, **kwargs)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"busy': the folder holds other files — save into a new or empty folder"):
        save(run, tmp_path / "busy")
    assert not (tmp_path / "a").exists()


def _edit(folder, **changes):
    description = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**description, **changes}))


def test_a_damaged_or_mismatched_folder_is_one_line_naming_the_file(saved_mlp, tmp_path):
    original, _ = saved_mlp
    folder = shutil.copytree(original, tmp_path / "copy")
    _edit(folder, model={"name": "mnist1d_mlp", "args": {"hidden": [8]}})
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*copy/weights': state params/dense_1/b has shape \(16,\) "
                                              r"in the checkpoint, the target expects \(8,\)"):
        load(folder)
    _edit(folder, model={"layers": [{"Dense": {"features": 3}}, "Rellu"]})
    with pytest.raises(ConfigError, match=r"model.json: model.layers\[1\]: unknown layer 'Rellu' — did you mean "
                                          r"'Relu'\?"):
        load(folder)
    _edit(folder, model={"layers": [{"Conv1D": {"features": 2, "kernel_size": 3}}]})
    with pytest.raises(ValueError, match=r"model.json: input_shape: examples of shape \(40,\) do not fit the model "
                                         r"— serial\[0\] Conv1D: expected input"):
        load(folder)
    for changes, message in [({"format": "keras"}, r"format 'keras' version 1, this fdl reads 'fdl.saved_model'"),
                             ({"input_shape": None}, r"field 'input_shape' is missing or not a list"),
                             ({"preprocessing": "scale"}, r"preprocessing 'scale' — expected one of standardize"),
                             ({"input_dtype": "int8"}, r"input_dtype 'int8' — expected one of float32, int32")]:
        shutil.copy(original / "model.json", folder / "model.json")
        _edit(folder, **changes)
        with pytest.raises(ValueError, match=r"model.json: " + message):
            load(folder)
    (folder / "model.json").write_text('{"format": ')
    with pytest.raises(ValueError, match=r"model.json: not JSON \(.*\) — restore it, or save the model again$"):
        load(folder)
    (folder / "model.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model.json: missing — not a folder written by fdl.save"):
        load(folder)


def test_damaged_weights_are_refused_naming_the_folder(saved_mlp, tmp_path):
    original, _ = saved_mlp
    folder = shutil.copytree(original, tmp_path / "copy")
    data = max((path for path in (folder / "weights").rglob("*") if path.is_file()), key=lambda p: p.stat().st_size)
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    data.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*copy/weights': "):
        load(folder)
    shutil.rmtree(folder / "weights")
    with pytest.raises(FileNotFoundError, match=r"copy/weights: missing — restore it from a copy of the folder"):
        load(folder)
    with pytest.raises(FileNotFoundError, match=r"saved model '.*nowhere' does not exist — pass a folder written by "
                                                r"fdl.save$"):
        load(tmp_path / "nowhere")


def test_models_fdl_cannot_save_are_refused_in_one_line(saved_mlp):
    _, run = saved_mlp
    gan = dataclasses.replace(run, arguments=dataclasses.replace(run.arguments, model={"generator": run.model,
                                                                                      "discriminator": run.model}))
    with pytest.raises(ValueError, match=r"it trains several models \(discriminator, generator\) — fdl saves and "
                                         r"exports one model: pass that Layer and a TrainState of its own params$"):
        save(gan, "unused")
    with pytest.raises(ValueError, match=r"^inputs: this model takes a dict of arrays \(tokens, mask\); saving and "
                                         r"exporting take models of one input array$"):
        input_dtype_of({"tokens": np.zeros((2, 3), np.int32), "mask": np.ones((2, 3), bool)})
