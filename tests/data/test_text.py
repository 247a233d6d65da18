"""fdl.data.load_text: byte windows of a file or folder, split by position; pytree splits checked at load."""
import numpy as np
import pytest

from fdl import data
from fdl.data import Dataset, Split


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 20-byte file holding the bytes 0..19, so every token is its own position."""
    path = tmp_path_factory.mktemp("text") / "tiny.bin"
    path.write_bytes(bytes(range(20)))
    return path


def test_windows_are_cut_by_position_from_a_hand_computed_text(tiny):
    # 20 bytes: val and test get floor(0.25 * 20) = 5 each, train the first 10.
    ds = data.load("text", path=tiny, context=3, stride=2, val_fraction=0.25, test_fraction=0.25)
    assert ds.name == "tiny.bin" and ds.feature_shape == (3,) and ds.num_classes is None
    np.testing.assert_array_equal(ds.train.x["tokens"], [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]])
    # val/test step by eval_stride = context: [10..13] fits in 10..14, a second window [13..16] does not.
    np.testing.assert_array_equal(ds.val.x["tokens"], [[10, 11, 12, 13]])
    np.testing.assert_array_equal(ds.test.x["tokens"], [[15, 16, 17, 18]])
    for split in ds.splits().values():
        assert split.y is None and split.x["tokens"].dtype == np.int32
        assert split.x["mask"].dtype == bool and split.x["mask"].all()
        assert split.x["mask"].shape == split.x["tokens"].shape
    assert data.as_examples(ds, "val") is ds.val.x  # the dict is the batch an objective gets


def test_stride_one_gives_every_window_and_limit_bytes_cuts_first(tiny):
    ds = data.load_text(tiny, context=2, stride=1, eval_stride=1, val_fraction=0.3, limit_bytes=10)
    np.testing.assert_array_equal(ds.train.x["tokens"], [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]])
    np.testing.assert_array_equal(ds.val.x["tokens"], [[7, 8, 9]])  # bytes 7..9: floor(0.3 * 10) = 3
    assert ds.test is None and ds.train.num_examples == 5


def test_a_folder_joins_its_regular_files_in_name_order(tmp_path):
    (tmp_path / "b").write_bytes(b"xy")
    (tmp_path / "a").write_bytes(b"uv")
    (tmp_path / "link").symlink_to(tmp_path / "a")  # read once, not twice
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c").write_bytes(b"zz")
    assert data.read_text_bytes(tmp_path).tobytes() == b"uv\nxy"


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(context=3, val_fraction=0.1), ValueError,
     r"^load_text \S+tiny.bin: the val part has 2 of the 20 bytes, fewer than context \+ 1 = 4 — "),
    (dict(context=0), ValueError, r"^load_text: context must be an int >= 1, got 0$"),
    (dict(stride=1.5), ValueError, r"^load_text: stride must be an int >= 1, got 1.5$"),
    (dict(val_fraction=1.0), ValueError, r"^load_text: val_fraction must be in \[0, 1\), got 1.0$"),
    (dict(val_fraction=0.5, test_fraction=0.5), ValueError,
     r"^load_text: val_fraction \+ test_fraction = 1 leaves no training text"),
], ids=["short-part", "context", "stride", "fraction", "sum"])
def test_bad_arguments_are_one_line_errors(tiny, kwargs, error, message):
    with pytest.raises(error, match=message):
        data.load_text(tiny, **kwargs)


def test_missing_paths_are_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing.txt: no such file or folder$"):
        data.load("text", path=tmp_path / "nothing.txt")
    with pytest.raises(FileNotFoundError, match=r": the folder holds no regular file to read as text$"):
        data.load("text", path=tmp_path)


# --- leaves of one split with different leading lengths: refused when the data is loaded -----------

TOKENS, SHORT_MASK = np.zeros((100, 17), np.int32), np.ones((90, 17), bool)
LEAF_LENGTHS = r"^dataset '\w+': val\['tokens'\] has 100 examples but val\['mask'\] has 90 — give every array one row per example$"


@pytest.mark.parametrize("build", [
    lambda: Dataset("corpus", Split({"tokens": TOKENS[:5], "mask": SHORT_MASK[:5]}),
                    val=Split({"tokens": TOKENS, "mask": SHORT_MASK})),
    lambda: data.from_arrays({"tokens": TOKENS[:5], "mask": SHORT_MASK[:5]},
                             x_val={"tokens": TOKENS, "mask": SHORT_MASK}),
], ids=["Dataset", "from_arrays"])
def test_leaves_of_different_lengths_fail_at_load_naming_split_and_leaf(build):
    with pytest.raises(ValueError, match=LEAF_LENGTHS):
        build()


def test_a_dict_split_is_validated_but_keeps_its_dtypes():
    ds = data.from_arrays({"tokens": TOKENS, "mask": TOKENS > 0})
    assert ds.train.x["tokens"].dtype == np.int32 and ds.train.num_examples == 100 and ds.feature_shape == ()
    bad = {"tokens": TOKENS, "weight": np.where(np.arange(100)[:, None] == 7, np.nan, np.ones((100, 17)))}
    with pytest.raises(ValueError, match=r"^dataset 'arrays': train\['weight'\]\[\(7, 0\)\] holds nan — drop or "):
        data.from_arrays(bad)


def test_a_dict_split_is_not_x_y_arrays():
    with pytest.raises(TypeError, match=r"^train: the split holds a dict of examples \('tokens'\), not \(x, y\) "
                                        r"arrays — train on it with an objective"):
        data.as_arrays(Split({"tokens": TOKENS}))
