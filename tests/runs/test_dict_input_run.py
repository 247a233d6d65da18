"""A model that takes a dict of inputs through `fdl train` and `fdl predict`: data from an .npz with one
array per input, preprocessing fitted per input, predictions of the loaded run as by hand."""
import re

import numpy as np
import pytest

import fdl
from fdl.cli.main import main

# The model of a config's `model: {target: dict_input_model.two_inputs}`: Dense(3) over the
# concatenation of x["a"] and x["b"] (a user's module, put on sys.path by the fixture).
MODEL_MODULE = '''
import jax.numpy as jnp
from fdl import nn


def two_inputs():
    dense = nn.Dense(3)

    def init(key, input_shape):
        return dense.init(key, (input_shape["a"][0] + input_shape["b"][0],))

    def apply(params, state, x, *, key=None, train=False):
        return dense.apply(params, state, jnp.concatenate([x["a"], x["b"]]), key=key, train=train)

    return nn.Layer(init, apply, "TwoInputs")
'''

CONFIG = """
data: {{name: npz, path: {path}, args: {{x_key: [a, b]}}, preprocess: standardize}}
model: {{target: dict_input_model.two_inputs}}
optimizer: {{name: sgd, learning_rate: 0.1}}
training: {{epochs: 2, batch_size: 16, verbose: 0}}
metrics: [accuracy]
output: {{tensorboard: false, plots: false}}
"""


def _arrays(rng, n):
    """n examples of inputs a (2,) and b (4,) on other scales than 0/1, and their 3-class labels."""
    a = rng.normal(3.0, 2.0, size=(n, 2)).astype(np.float32)
    b = rng.normal(-1.0, 5.0, size=(n, 4)).astype(np.float32)
    return a, b, ((a[:, 0] > 3) + (b[:, 1] > -1)).astype(np.int32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, the raw training arrays {a, b}, raw inputs {a, b} to predict), after `fdl train`."""
    folder = tmp_path_factory.mktemp("dict_run")
    rng = np.random.default_rng(0)
    (a, b, y), (a_val, b_val, y_val), (a_test, b_test, y_test) = (_arrays(rng, n) for n in (64, 16, 16))
    np.savez(folder / "pairs.npz", a=a, b=b, y=y, a_val=a_val, b_val=b_val, y_val=y_val,
             a_test=a_test, b_test=b_test, y_test=y_test)
    (folder / "dict_input_model.py").write_text(MODEL_MODULE)
    (folder / "c.yaml").write_text(CONFIG.format(path=folder / "pairs.npz"))
    inputs = dict(zip("ab", _arrays(rng, 5)[:2]))
    np.savez(folder / "inputs.npz", **inputs)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        assert main(["train", str(folder / "c.yaml"), "--out", str(folder / "run"), "--quiet"]) == 0
        yield folder, {"a": a, "b": b}, inputs


def test_fdl_predict_of_a_dict_input_run_is_the_model_on_each_input_standardized_by_hand(trained):
    folder, train, inputs = trained
    assert main(["predict", str(folder / "run"), str(folder / "inputs.npz"), "--out", str(folder / "out.npy")]) == 0
    run = fdl.load_run(folder / "run")
    # numpy's standardization of each input with train's statistics (population std)
    by_hand = {key: (inputs[key] - train[key].mean(0)) / train[key].std(0) for key in "ab"}
    expected = fdl.predict(run.model, run.state, by_hand)
    assert expected.shape == (5, 3)
    np.testing.assert_allclose(np.load(folder / "out.npy"), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run.predict(inputs), expected, rtol=1e-5, atol=1e-5)
    # the run's splits are dicts with labels: the loaded run scores the test split as the summary did
    summary = fdl.records.RunDir(folder / "run").summary()
    np.testing.assert_allclose(run.evaluate("test")["accuracy"], summary["test"]["accuracy"], rtol=1e-6)


@pytest.mark.parametrize("arrays, message", [
    ({"a": np.zeros((5, 2))}, r"inputs\.npz' has no array 'b' — the run's model takes inputs \['a', 'b'\]; "
                              r"save one array per input: np\.savez\('inputs\.npz', a=\.\.\., b=\.\.\.\)$"),
    ({"a": np.zeros((5, 2)), "b": np.zeros((5, 4)), "c": np.zeros(5)}, r"inputs\.npz' holds 'c', not an input"),
    ({"a": np.zeros((5, 2)), "b": np.zeros((5, 3))},
     r"inputs\.npz': predict: x\['b'\] has examples of shape \(3,\), the model was built for \(4,\)"),
    ({"a": np.zeros((5, 2)), "b": np.zeros((4, 4))},
     r"inputs\.npz': predict\['b'\] has 4 examples but predict\['a'\] has 5"),
    (np.zeros((5, 6)), r"x\.npy' is one array, the run's model takes a dict of inputs \['a', 'b'\] — pass an "
                       r"\.npz with keys \['a', 'b'\]"),
], ids=["missing", "extra", "shape", "length", "npy"])
def test_fdl_predict_names_the_file_and_the_input_key(trained, tmp_path, capsys, arrays, message):
    path = tmp_path / ("inputs.npz" if isinstance(arrays, dict) else "x.npy")
    np.savez(path, **arrays) if isinstance(arrays, dict) else np.save(path, arrays)
    assert main(["predict", str(trained[0] / "run"), str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and re.search(message, error), error


@pytest.mark.parametrize("command", ["explain", "export", "serve"])
def test_the_commands_of_one_input_array_name_a_dict_input_run(trained, capsys, command):
    folder = trained[0]
    extra = {"explain": [str(folder / "inputs.npz")], "export": ["--out", str(folder / "export")], "serve": []}
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        assert main([command, str(folder / "run"), *extra[command]]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert re.search(r"takes a dict of (inputs|arrays) .*'?a'?, '?b'?", error), error


# --- the data a dict-input run reads (no compiles) -----------------------------------------------

@pytest.fixture
def pairs(tmp_path):
    """An .npz of inputs a (8, 2) int and b (8, 4) float64, int64 labels y, and a val split."""
    rng = np.random.default_rng(1)
    arrays = dict(a=rng.integers(0, 9, (8, 2)), b=rng.normal(size=(8, 4)), y=np.arange(8) % 3,
                  a_val=rng.integers(0, 9, (4, 2)), b_val=rng.normal(size=(4, 4)), y_val=np.arange(4) % 3)
    np.savez(tmp_path / "pairs.npz", **arrays)
    return tmp_path / "pairs.npz", arrays


@pytest.mark.parametrize("x_key", [["a", "b"], {"a": "a", "b": "b"}], ids=["list", "mapping"])
def test_load_npz_reads_one_array_per_input_and_each_split(pairs, x_key):
    path, arrays = pairs
    ds = fdl.data.load("npz", path=path, x_key=x_key)
    assert ds.feature_shape == {"a": (2,), "b": (4,)} and ds.num_classes == 3 and ds.test is None
    for split, suffix in ((ds.train, ""), (ds.val, "_val")):
        x, y = split.examples  # (x_dict, y): the batch the loss path trains on
        for key in "ab":
            np.testing.assert_array_equal(x[key], arrays[key + suffix])  # dtypes kept, as any dict split
        np.testing.assert_array_equal(y, arrays["y" + suffix].astype(np.int32))
        assert y.dtype == np.int32


def test_load_npz_of_renamed_inputs_and_its_errors(pairs, tmp_path):
    path, arrays = pairs
    ds = fdl.data.load_npz(path, x_key={"left": "a", "right": "b"})
    assert ds.feature_shape == {"left": (2,), "right": (4,)}
    np.testing.assert_array_equal(ds.val.x["right"], arrays["b_val"])
    with pytest.raises(ValueError, match=r"pairs\.npz: no array 'c'; the file holds \["):
        fdl.data.load_npz(path, x_key=["a", "c"])
    np.savez(tmp_path / "half.npz", **{k: v for k, v in arrays.items() if k != "b_val"})
    with pytest.raises(ValueError, match=r"half\.npz: has a_val but no 'b_val' — give every input's val array, or none"):
        fdl.data.load_npz(tmp_path / "half.npz", x_key=["a", "b"])
    np.savez(tmp_path / "other.npz", **{**arrays, "b_val": np.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"^dataset 'other': val\.x\['b'\] has per-example shape \(3,\), but the "
                                         r"dataset's feature_shape\['b'\] is \(4,\)"):
        fdl.data.load_npz(tmp_path / "other.npz", x_key=["a", "b"])
    with pytest.raises(ValueError, match=r"^x_key: expected an array name, a list of them or a mapping"):
        fdl.data.load_npz(path, x_key=[1, 2])


def test_standardize_fits_each_input_on_train_and_round_trips_through_its_npz_arrays(pairs):
    from fdl.data.preprocess import stats_arrays, stats_from_arrays

    path, arrays = pairs
    ds, stats = fdl.data.preprocess(fdl.data.load_npz(path, x_key=["a", "b"]), "standardize")
    for key in "ab":
        mean, std = arrays[key].mean(0), arrays[key].std(0)
        np.testing.assert_allclose(ds.val.x[key], (arrays[key + "_val"] - mean) / std, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[key].scale, std, rtol=1e-6)
    flat = stats_arrays(stats)
    assert sorted(flat) == ["a/mean", "a/scale", "b/mean", "b/scale"]
    back = stats_from_arrays(fdl.data.StandardizeStats, flat)
    np.testing.assert_array_equal(back["b"].mean, stats["b"].mean)
    with pytest.raises(ValueError, match=r"^standardize: x has inputs \['a'\], the statistics were fitted on "
                                         r"inputs \['a', 'b'\]"):
        fdl.data.transform("standardize", stats, {"a": arrays["a"]})
    tokens = fdl.data.from_arrays({"tokens": np.zeros((4, 3), np.int32)})
    with pytest.raises(ValueError, match=r"^min_max: dataset 'arrays' holds examples \['tokens'\] for an "
                                         r"objective, not features of a model"):
        fdl.data.preprocess(tokens, "min_max")


def test_a_val_split_carved_from_dict_inputs_keeps_each_example_with_its_label(pairs):
    path, _ = pairs
    ds = fdl.data.load_npz(path, x_key=["a", "b"])
    train = fdl.data.Dataset("pairs", ds.train)
    carved = fdl.data.train_val_split(train, 0.25, seed=0)
    rows = np.concatenate([carved.train.x["b"], carved.val.x["b"]])
    labels = np.concatenate([carved.train.y, carved.val.y])
    order = [int(np.flatnonzero((ds.train.x["b"] == row).all(1))[0]) for row in rows]
    assert carved.val.num_examples == 2 and sorted(order) == list(range(8))
    np.testing.assert_array_equal(labels, ds.train.y[order])
