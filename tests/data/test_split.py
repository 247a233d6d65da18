"""Tests of train_val_split and kfold_indices."""
import numpy as np
import pytest

from fdl.data import from_arrays, kfold_indices, train_val_split


def _dataset(labels, num_classes=None):
    labels = np.asarray(labels)
    ids = np.arange(labels.shape[0], dtype=np.float32)[:, None]  # x holds the example id
    return from_arrays(ids, labels, num_classes=num_classes)


def _ids(split):
    return split.x[:, 0].astype(int)


def test_split_partitions_train_and_keeps_rows_with_labels():
    labels = np.arange(100) % 4
    dataset = train_val_split(_dataset(labels), 0.1, seed=3)
    train_ids, val_ids = _ids(dataset.train), _ids(dataset.val)
    assert (len(train_ids), len(val_ids)) == (90, 10)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, val_ids])), np.arange(100))
    np.testing.assert_array_equal(dataset.val.y, labels[val_ids])  # rows stay aligned


def test_stratified_split_keeps_class_proportions_exactly():
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    dataset = train_val_split(_dataset(labels), 0.2)
    np.testing.assert_array_equal(np.bincount(dataset.val.y), [12, 6, 2])
    np.testing.assert_array_equal(np.bincount(dataset.train.y), [48, 24, 8])


def test_stratified_split_allots_remainders_to_reach_the_exact_total():
    dataset = train_val_split(_dataset(np.repeat([0, 1, 2], 5)), 0.5)  # round(7.5) = 8
    np.testing.assert_array_equal(np.bincount(dataset.val.y), [3, 3, 2])


def test_unstratified_and_regression_splits_have_the_right_size():
    unstratified = train_val_split(_dataset(np.arange(50) % 2), 0.3, stratify=False)
    regression = train_val_split(_dataset(np.linspace(0, 1, 50)), 0.3)
    assert unstratified.val.x.shape[0] == regression.val.x.shape[0] == 15
    assert regression.num_classes is None


def test_split_is_a_function_of_the_seed():
    dataset = _dataset(np.arange(60) % 3)
    same = [_ids(train_val_split(dataset, 0.2, seed=1).val) for _ in range(2)]
    other = _ids(train_val_split(dataset, 0.2, seed=2).val)
    np.testing.assert_array_equal(*same)
    assert not np.array_equal(same[0], other)


@pytest.mark.parametrize("fraction, message", [
    (0.0, r"fraction must be in \(0, 1\), got 0.0"),
    (1.0, r"fraction must be in \(0, 1\), got 1.0"),
    (0.01, r"fraction=0.01 of 20 examples gives 0 val examples"),
])
def test_bad_fraction_is_rejected(fraction, message):
    with pytest.raises(ValueError, match=message):
        train_val_split(_dataset(np.arange(20) % 2), fraction)


def test_existing_val_split_is_rejected():
    dataset = train_val_split(_dataset(np.arange(20) % 2), 0.5)
    with pytest.raises(ValueError, match="already has a val split"):
        train_val_split(dataset, 0.5)


def test_kfold_val_folds_partition_and_balance():
    folds = kfold_indices(23, 5, seed=1)
    val_sets = [val for _, val in folds]
    np.testing.assert_array_equal(np.sort(np.concatenate(val_sets)), np.arange(23))
    assert sorted(len(val) for val in val_sets) == [4, 4, 5, 5, 5]
    for train, val in folds:
        np.testing.assert_array_equal(np.union1d(train, val), np.arange(23))
        assert np.intersect1d(train, val).size == 0


def test_stratified_kfold_spreads_each_class_evenly():
    labels = np.repeat([0, 1, 2], [12, 7, 5])
    for _, val in kfold_indices(24, 3, labels=labels):
        counts = np.bincount(labels[val], minlength=3)
        assert np.all(np.abs(counts - np.array([12, 7, 5]) / 3) < 1), counts


def test_kfold_is_a_function_of_the_seed():
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(kfold_indices(10, 2, seed=4),
                                                          kfold_indices(10, 2, seed=4)))
    assert not np.array_equal(kfold_indices(10, 2, seed=4)[0][1],
                              kfold_indices(10, 2, seed=5)[0][1])


@pytest.mark.parametrize("k, labels, message", [
    (1, None, r"k must be in \[2, num_examples=10\], got 1"),
    (11, None, r"k must be in \[2, num_examples=10\], got 11"),
    (2, np.zeros(9), r"labels have shape \(9,\), expected \(10,\)"),
])
def test_kfold_errors(k, labels, message):
    with pytest.raises(ValueError, match=message):
        kfold_indices(10, k, labels=labels)
