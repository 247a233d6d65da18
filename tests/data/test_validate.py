"""Tests of load-time validation and the dtype rule (fdl.data.validate)."""
import numpy as np
import pytest

from fdl.data import Dataset, Split, check_input_shape, from_arrays, validate_dataset


def _x(n=4, features=3, dtype=np.float32):
    return np.arange(n * features, dtype=dtype).reshape(n, features)


def _labels(n=4):
    return np.arange(n) % 2


# --- conversions -------------------------------------------------------------

def test_float64_features_round_to_nearest_float32():
    x = np.array([[0.1, 1 / 3], [1e-3, 2.0]])
    dataset = from_arrays(x, np.array([0, 1]))
    assert dataset.train.x.dtype == np.float32
    np.testing.assert_array_equal(dataset.train.x, x.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_integer_and_bool_features_convert_exactly_without_rescaling(dtype):
    x = np.array([[0, 1], [1, 0]], dtype)
    np.testing.assert_array_equal(from_arrays(x).train.x, np.array([[0.0, 1.0], [1.0, 0.0]]))


def test_largest_exact_integer_is_accepted():
    assert from_arrays(np.array([[2**24], [-(2**24)]])).train.x[0, 0] == 2.0**24


def test_labels_become_int32_and_whole_float_labels_are_accepted():
    dataset = from_arrays(_x(), np.array([0.0, 1.0, 2.0, 1.0]), num_classes=3)
    assert dataset.train.y.dtype == np.int32
    np.testing.assert_array_equal(dataset.train.y, [0, 1, 2, 1])


def test_float_labels_without_num_classes_are_float32_regression_targets():
    dataset = from_arrays(_x(), np.array([0.5, 1.5, 2.5, 3.5]))
    assert dataset.num_classes is None and dataset.train.y.dtype == np.float32


def test_unlabeled_split_passes():
    assert from_arrays(_x()).train.y is None


def test_validate_dataset_converts_every_split():
    dataset = Dataset("toy", Split(_x(dtype=np.float64), _labels()),
                      test=Split(_x(2, dtype=np.int16), np.array([1, 0], np.uint8)), num_classes=2)
    checked = validate_dataset(dataset)
    assert {split.x.dtype for split in checked.splits().values()} == {np.dtype(np.float32)}
    assert {split.y.dtype for split in checked.splits().values()} == {np.dtype(np.int32)}


# --- errors --------------------------------------------------------------------

def test_length_mismatch_names_split_and_first_unmatched_index():
    with pytest.raises(ValueError, match=r"dataset 'arrays' train: x has 4 examples but y has 3 "
                                         r"\(first unmatched index 3\)"):
        from_arrays(_x(), np.array([0, 1, 0]))


def test_val_length_mismatch_names_val():
    with pytest.raises(ValueError, match=r"'arrays' val: x has 2 examples but y has 1"):
        from_arrays(_x(), _labels(), x_val=_x(2), y_val=np.array([0]))


@pytest.mark.parametrize("bad_label, index", [(5, 2), (-1, 1)])
def test_label_outside_range_names_first_bad_index(bad_label, index):
    y = np.array([0, 1, 1, 0])
    y[index:] = bad_label
    message = rf"train\.y\[{index}\] holds {bad_label}, outside \[0, 3\)"
    with pytest.raises(ValueError, match=message):
        from_arrays(_x(), y, num_classes=3)


def test_inferred_num_classes_covers_test_labels():
    dataset = from_arrays(_x(), np.array([0, 1, 1, 0]), x_test=_x(1), y_test=np.array([4]))
    assert dataset.num_classes == 5


def test_fractional_label_names_index():
    with pytest.raises(ValueError, match=r"train\.y\[1\] holds 1\.5, not a whole number"):
        from_arrays(_x(), np.array([0.0, 1.5, 1.0, 0.0]), num_classes=2)


def test_fractional_float64_label_names_first_bad_index_like_a_negative_label():
    y = np.zeros(10)
    y[7], y[9] = 1.5, 2.25
    with pytest.raises(ValueError, match=r"dataset 'arrays' train\.y\[7\] holds 1\.5, not a whole "
                                         r"number — class labels must be whole numbers"):
        from_arrays(_x(10), y, num_classes=3)


def test_fractional_label_in_val_split_names_val():
    with pytest.raises(ValueError, match=r"'arrays' val\.y\[1\] holds 0\.5, not a whole number"):
        from_arrays(_x(), _labels(), x_val=_x(2), y_val=np.array([1.0, 0.5]), num_classes=2)


def test_fractional_label_of_a_directly_built_dataset_is_rejected():
    dataset = Dataset("toy", Split(_x(), np.array([0.0, 1.0, 0.25, 1.0])), num_classes=2)
    with pytest.raises(ValueError, match=r"dataset 'toy' train\.y\[2\] holds 0\.25, not a whole"):
        validate_dataset(dataset)


@pytest.mark.parametrize("bad, name", [(np.nan, "nan"), (np.inf, "inf")])
def test_non_finite_class_label_is_named_as_such(bad, name):
    with pytest.raises(ValueError, match=rf"train\.y\[2\] holds {name}, which is not finite — drop"):
        from_arrays(_x(), np.array([0.0, 1.0, bad, 1.0]), num_classes=2)


def test_negative_whole_float_label_is_outside_the_range():
    with pytest.raises(ValueError, match=r"train\.y\[3\] holds -1\.0, outside \[0, 2\)"):
        from_arrays(_x(), np.array([0.0, 1.0, 1.0, -1.0]), num_classes=2)


def test_one_hot_labels_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"train\.y has shape \(4, 2\).*y\.argmax\(axis=1\)"):
        from_arrays(_x(), np.eye(2, dtype=int)[_labels()], num_classes=2)


def test_string_labels_are_rejected():
    with pytest.raises(ValueError, match=r"train\.y has dtype <U1; expected integer class"):
        from_arrays(_x(), np.array(list("abab")), num_classes=2)


@pytest.mark.parametrize("bad, name", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_feature_names_example_and_feature_index(bad, name):
    x = _x(dtype=np.float64)
    x[2, 1] = bad
    with pytest.raises(ValueError, match=rf"train\.x\[2\] holds {name} at feature index \(1,\), "
                                         "which is not finite"):
        from_arrays(x, _labels())


def test_non_finite_regression_target_is_rejected():
    with pytest.raises(ValueError, match=r"train\.y\[0\] holds nan"):
        from_arrays(_x(), np.array([np.nan, 1.0, 2.0, 3.0]))


def test_empty_split_is_rejected():
    with pytest.raises(ValueError, match=r"'arrays' test is empty \(x has shape \(0, 3\)\)"):
        from_arrays(_x(), _labels(), x_test=np.zeros((0, 3)), y_test=np.zeros(0, int))


def test_rank_one_features_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"train\.x has shape \(4,\).*x\[:, None\]"):
        from_arrays(np.arange(4.0), _labels())


def test_splits_with_different_feature_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"val\.x has per-example shape \(4,\), but the "
                                         r"dataset's feature_shape is \(3,\)"):
        from_arrays(_x(), _labels(), x_val=_x(2, 4), y_val=np.array([0, 1]))


def test_declared_feature_shape_mismatch_is_rejected():
    dataset = Dataset("toy", Split(_x(), None), feature_shape=(3, 1))
    with pytest.raises(ValueError, match=r"train\.x has per-example shape \(3,\), but the "
                                         r"dataset's feature_shape is \(3, 1\)"):
        validate_dataset(dataset)


@pytest.mark.parametrize("values, dtype_name", [
    (np.array([["a", "b"]]), "<U1"),
    (np.array([[1 + 2j, 0j]]), "complex128"),
    (np.array([[1, None]], dtype=object), "object"),
])
def test_non_real_feature_dtypes_are_rejected(values, dtype_name):
    with pytest.raises(ValueError, match=rf"train\.x has dtype {dtype_name}; expected real"):
        from_arrays(values)


def test_integer_beyond_float32_precision_is_rejected():
    x = np.array([[1], [2**24 + 1]], np.int64)
    with pytest.raises(ValueError, match=r"train\.x\[1\] holds 16777217.*2\*\*24"):
        from_arrays(x)


def test_float64_beyond_float32_range_is_rejected():
    with pytest.raises(ValueError, match=r"train\.x\[0\] holds 1e\+39.*float32's range"):
        from_arrays(np.array([[1e39], [0.0]]))


def test_numpy_integer_num_classes_becomes_int():
    num_classes = from_arrays(_x(), _labels(), num_classes=np.int64(2)).num_classes
    assert type(num_classes) is int and num_classes == 2


def test_bad_num_classes_and_class_names_are_rejected():
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        validate_dataset(Dataset("toy", Split(_x(), None), num_classes=0))
    with pytest.raises(ValueError, match="1 class_names for num_classes=2"):
        from_arrays(_x(), _labels(), class_names=["only"])


# --- check_input_shape ---------------------------------------------------------

def test_check_input_shape_passes_on_match():
    check_input_shape(from_arrays(_x()), (3,))


def test_check_input_shape_suggests_reshape_when_sizes_agree():
    dataset = from_arrays(np.zeros((2, 40)), name="x")
    with pytest.raises(ValueError, match=r"dataset 'x' train\.x has per-example shape \(40,\), "
                                         r"model expects \(40, 1\) — reshape with "
                                         r"x\.reshape\(\(-1, 40, 1\)\)"):
        check_input_shape(dataset, (40, 1))


def test_check_input_shape_reports_size_mismatch():
    with pytest.raises(ValueError, match=r"sizes differ \(3 vs 80 values per example\)"):
        check_input_shape(from_arrays(_x()), (40, 2))
