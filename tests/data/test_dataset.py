"""Tests of the Dataset/Split containers."""
import dataclasses

import numpy as np
import pytest

from fdl.data import Dataset, Split


def _split(n: int, feature_shape=(3,)) -> Split:
    return Split(np.zeros((n, *feature_shape), np.float32), np.zeros(n, np.int32))


def test_feature_shape_is_derived_from_train_when_empty():
    dataset = Dataset("toy", _split(4, (28, 28, 1)))
    assert dataset.feature_shape == (28, 28, 1)


def test_declared_feature_shape_is_kept():
    assert Dataset("toy", _split(4), feature_shape=(3,)).feature_shape == (3,)


def test_splits_lists_present_splits_in_order():
    dataset = Dataset("toy", _split(4), test=_split(2))
    assert list(dataset.splits()) == ["train", "test"]
    assert dataset.splits()["test"].num_examples == 2


def test_split_is_a_two_field_named_tuple():
    x, y = _split(5)
    assert Split._fields == ("x", "y") and x.shape == (5, 3) and y.shape == (5,)


def test_dataset_is_frozen_and_extras_are_not_shared():
    first, second = Dataset("a", _split(1)), Dataset("b", _split(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.name = "c"
    assert first.extras == {} and first.extras is not second.extras
