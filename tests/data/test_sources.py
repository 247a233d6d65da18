"""Tests of the dataset sources (fdl.data.sources); everything runs on files in tmp_path."""
import gzip
import random
import struct
import warnings

import numpy as np
import pytest

from fdl.data import cache_dir, from_arrays, load, load_csv, load_npz, read_idx
from fdl.data import sources

# --- from_arrays -----------------------------------------------------------------

def test_from_arrays_builds_the_splits_and_infers_classes():
    dataset = from_arrays(np.ones((3, 2)), [0, 2, 1], x_val=np.ones((1, 2)), y_val=[1],
                          class_names=("a", "b", "c"), name="toy")
    assert dataset.name == "toy" and dataset.num_classes == 3
    assert list(dataset.splits()) == ["train", "val"] and dataset.class_names == ("a", "b", "c")


def test_from_arrays_rejects_labels_without_features():
    with pytest.raises(ValueError, match="dataset 'arrays': y_test given without x_test"):
        from_arrays(np.ones((3, 2)), [0, 1, 0], y_test=[0])


# --- the dispatcher ----------------------------------------------------------------

def test_unknown_name_lists_valid_names_with_suggestion():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnst' \(did you mean 'mnist'\?\); "
                                         r"valid names: csv, fashion_mnist, mnist, mnist1d, npz"):
        load("mnst")


def test_file_sources_need_a_path():
    with pytest.raises(ValueError, match=r"load\('mnist'\) needs path="):
        load("mnist")


# --- mnist1d and its cache ---------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FDL_CACHE_DIR", str(tmp_path))
    return tmp_path / sources.MNIST1D_CACHE_FILE


def test_mnist1d_matches_the_package_generator_and_keeps_global_rngs(cache):
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(7)
    random.seed(7)
    dataset = load("mnist1d")
    assert (np.random.randint(10**9), random.random()) == (
        np.random.RandomState(7).randint(10**9), random.Random(7).random())
    reference = make_dataset(get_dataset_args())
    np.testing.assert_array_equal(dataset.train.x, reference["x"].astype(np.float32))
    np.testing.assert_array_equal(dataset.test.y, reference["y_test"])
    assert (dataset.train.x.shape, dataset.test.x.shape) == ((4000, 40), (1000, 40))
    assert (dataset.train.y.dtype, dataset.num_classes, dataset.val) == (np.int32, 10, None)
    assert cache.is_file()


def _fake_generator(monkeypatch) -> list:
    """Replaces the 2-second generator by a tiny valid one; returns the call log."""
    calls = []
    rng = np.random.default_rng(0)
    arrays = {key: (rng.normal(size=shape) if dtype == np.float32
                    else rng.integers(0, 10, shape)).astype(dtype)
              for key, (shape, dtype) in sources._MNIST1D_LAYOUT.items()}
    monkeypatch.setattr(sources, "_generate_mnist1d", lambda: calls.append(1) or arrays)
    return calls


def test_second_load_reads_the_cache(cache, monkeypatch):
    calls = _fake_generator(monkeypatch)
    first, second = load("mnist1d"), load("mnist1d")
    assert len(calls) == 1
    np.testing.assert_array_equal(first.train.x, second.train.x)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp file left


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def _garbage(path):
    path.write_bytes(b"\x93NUMPY not really" * 50)


def _drop_key(path):
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "y_test"}
    np.savez(path, **arrays)


def _tamper(path):
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["x"][0, 0] += 1  # same shapes and dtypes, different bytes
    np.savez(path, **arrays)


@pytest.mark.parametrize("corrupt, reason", [
    (_truncate, "unreadable"), (_garbage, "unreadable"),
    (_drop_key, "array 'y_test' missing"), (_tamper, "sha256 mismatch")])
def test_corrupt_cache_is_rebuilt(cache, monkeypatch, corrupt, reason):
    calls = _fake_generator(monkeypatch)
    expected = load("mnist1d").train.x
    corrupt(cache)
    with pytest.warns(UserWarning, match=f"rebuilding corrupt cache .*: {reason}"):
        np.testing.assert_array_equal(load("mnist1d").train.x, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load("mnist1d")  # the rebuilt file is valid: no warning, no generation
    assert len(calls) == 2


def test_failed_cache_write_leaves_no_file(cache, monkeypatch):
    _fake_generator(monkeypatch)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sources.np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        load("mnist1d")
    assert list(cache.parent.iterdir()) == []


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("FDL_CACHE_DIR", str(tmp_path / "fdl_dir"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "fdl_dir"
    monkeypatch.delenv("FDL_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "fdl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "fdl"


# --- IDX files (MNIST, Fashion-MNIST) ----------------------------------------------

def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_mnist(directory, compress=("train-images-idx3-ubyte",)):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1], np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.array([7, 2], np.uint8)}
    for stem, array in arrays.items():
        if stem in compress:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(_idx_bytes(array)))
        else:
            (directory / stem).write_bytes(_idx_bytes(array))
    return arrays


def test_mnist_reads_idx_files_scaled_channels_last(tmp_path):
    arrays = _write_mnist(tmp_path)
    dataset = load("mnist", path=tmp_path)
    assert dataset.train.x.shape == (5, 28, 28, 1) and dataset.train.x.dtype == np.float32
    np.testing.assert_allclose(dataset.train.x[..., 0],
                               arrays["train-images-idx3-ubyte"] / 255, rtol=1e-6)
    np.testing.assert_array_equal(dataset.test.y, [7, 2])
    assert dataset.class_names == tuple("0123456789")


def test_fashion_mnist_has_its_class_names(tmp_path):
    _write_mnist(tmp_path, compress=())
    dataset = load("fashion_mnist", path=tmp_path)
    assert dataset.class_names[0] == "T-shirt/top" and dataset.class_names[9] == "Ankle boot"


def test_read_idx_big_endian_int16(tmp_path):
    path = tmp_path / "values.idx"
    path.write_bytes(_idx_bytes(np.array([[1, -2], [300, 4]], np.int16), type_code=0x0B))
    np.testing.assert_array_equal(read_idx(path), [[1, -2], [300, 4]])


def test_missing_directory_names_the_four_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mnist: .*missing is not a directory — expected "
                       r"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                       r"t10k-labels-idx1-ubyte \(each optionally \.gz\)"):
        load("mnist", path=tmp_path / "missing")


def test_missing_file_is_named(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"mnist: cannot find t10k-labels-idx1-ubyte\[\.gz\]"
                                                r" — expected train-images"):
        load("mnist", path=tmp_path)


@pytest.mark.parametrize("content, message", [
    (b"\x08\x03\x00\x00\x00\x00\x00\x05", r"bad magic number 0x08030000"),
    (_idx_bytes(np.zeros((5,), np.uint8))[:-1], r"4 bytes of data, expected 5 for shape \(5,\)"),
    (_idx_bytes(np.zeros((5, 2), np.uint8)), r"has shape \(5, 2\), expected 1 dimensions"),
])
def test_malformed_idx_file_is_named(tmp_path, content, message):
    _write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(content)
    with pytest.raises(ValueError, match=rf"mnist: .*train-labels-idx1-ubyte.*{message}.*"
                                         "expected train-images-idx3-ubyte"):
        load("mnist", path=tmp_path)


def test_corrupt_gzip_is_reported(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: cannot read"):
        load("mnist", path=tmp_path)


# --- npz -------------------------------------------------------------------------

def test_load_npz_reads_optional_splits(tmp_path):
    path = tmp_path / "toy.npz"
    np.savez(path, x=np.ones((4, 2)), y=[0, 1, 1, 0], x_test=np.zeros((2, 2)), y_test=[1, 0])
    dataset = load("npz", path=path)
    assert (dataset.name, dataset.num_classes) == ("toy", 2)
    assert list(dataset.splits()) == ["train", "test"]


def test_load_npz_custom_keys_and_unlabeled(tmp_path):
    path = tmp_path / "toy.npz"
    np.savez(path, features=np.ones((4, 2)), features_val=np.ones((1, 2)))
    dataset = load_npz(path, x_key="features", y_key=None)
    assert dataset.train.y is None and dataset.val.x.shape == (1, 2)


def test_load_npz_missing_key_lists_the_keys(tmp_path):
    path = tmp_path / "toy.npz"
    np.savez(path, x=np.ones((4, 2)), labels=[0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"no array 'y'; the file holds \['labels', 'x'\]"):
        load_npz(path)


def test_load_npz_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz: no such file"):
        load_npz(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.npz: not a readable \.npz archive"):
        load_npz(tmp_path / "bad.npz")


# --- csv -------------------------------------------------------------------------

def _csv(tmp_path, text):
    path = tmp_path / "table.csv"
    path.write_text(text)
    return path


def test_load_csv_label_by_name(tmp_path):
    path = _csv(tmp_path, "a,label,b\n1.5,0,2\n3,1,4\n5,2,6\n")
    dataset = load("csv", path=path, label_column="label")
    np.testing.assert_array_equal(dataset.train.x, [[1.5, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(dataset.train.y, [0, 1, 2])
    assert dataset.num_classes == 3 and dataset.train.y.dtype == np.int32


def test_load_csv_regression_no_header_semicolon(tmp_path):
    dataset = load_csv(_csv(tmp_path, "1;0.25\n2;0.5\n"), header=False, delimiter=";",
                       regression=True)
    np.testing.assert_array_equal(dataset.train.y, [0.25, 0.5])
    assert dataset.num_classes is None


def test_load_csv_unlabeled(tmp_path):
    assert load_csv(_csv(tmp_path, "a,b\n1,2\n"), label_column=None).train.x.shape == (1, 2)


@pytest.mark.parametrize("text, kwargs, message", [
    ("a,b\n1,0\n2,0.5\n", {}, r"table\.csv line 3: label 0\.5 is not a whole number"),
    ("a,b\n1,x\n", {}, r"table\.csv: could not convert string 'x'"),
    ("a,lable\n1,0\n", {"label_column": "label"},
     r"no column 'label' \(did you mean 'lable'\?\); columns are \['a', 'lable'\]"),
    ("1,0\n", {"label_column": "label", "header": False}, r"is a name, but header=False"),
    ("a,b\n1,0\n", {"label_column": 2}, r"label_column=2 is out of range for 2 columns"),
])
def test_load_csv_errors(tmp_path, text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_csv(_csv(tmp_path, text), **kwargs)


def test_load_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.csv: no such file"):
        load_csv(tmp_path / "absent.csv")


def test_integer_labels_in_one_split_and_floats_in_another_are_refused():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"y_val holds floats \(float32\) but y_train holds integer class labels"):
        from_arrays(x, np.array([0, 1, 2, 1]), x_val=x[:2], y_val=np.array([1.0, 0.5], np.float32))
