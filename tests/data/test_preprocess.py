"""Tests of fitted preprocessing and one_hot, against closed-form numbers."""
import numpy as np
import pytest

from fdl.data import (MinMaxStats, StandardizeStats, apply_min_max, apply_standardize,
                      fit_min_max, fit_standardize, from_arrays, invert_min_max,
                      invert_standardize, one_hot, preprocess, transform)

X = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]], np.float32)  # column 2 is constant


def test_standardize_closed_form_and_constant_feature():
    stats = fit_standardize(X)
    np.testing.assert_allclose(stats.mean, [3.0, 10.0])
    np.testing.assert_allclose(stats.scale, [np.sqrt(8 / 3), 1.0], rtol=1e-6)  # ddof=0
    expected = np.array([[-1, 0], [0, 0], [1, 0]]) * [np.sqrt(3 / 2), 1]
    np.testing.assert_allclose(apply_standardize(stats, X), expected, rtol=1e-6)


def test_min_max_closed_form_and_constant_feature():
    stats = fit_min_max(X)
    np.testing.assert_allclose(apply_min_max(stats, X), [[0, 0], [0.5, 0], [1, 0]])
    np.testing.assert_allclose(apply_min_max(stats, np.array([[7.0, 12.0]])), [[1.5, 2.0]])


@pytest.mark.parametrize("fit, apply, invert", [
    (fit_standardize, apply_standardize, invert_standardize),
    (fit_min_max, apply_min_max, invert_min_max)])
def test_round_trip_and_per_feature_shape(fit, apply, invert):
    x = np.random.default_rng(0).normal(3, 2, (50, 4, 4, 1)).astype(np.float32)
    stats = fit(x)
    assert all(field.shape == (4, 4, 1) and field.dtype == np.float32 for field in stats)
    np.testing.assert_allclose(invert(stats, apply(stats, x)), x, rtol=1e-5, atol=1e-5)


def test_preprocess_fits_on_train_only():
    rng = np.random.default_rng(1)
    dataset = from_arrays(rng.normal(5, 2, (400, 3)), rng.integers(0, 2, 400),
                          x_test=rng.normal(8, 1, (100, 3)), y_test=rng.integers(0, 2, 100))
    transformed, stats = preprocess(dataset, "standardize")
    np.testing.assert_allclose(stats.mean, dataset.train.x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(transformed.train.x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(transformed.train.x.std(axis=0), 1, rtol=1e-5)
    np.testing.assert_allclose(transformed.test.x,
                               (dataset.test.x - stats.mean) / stats.scale, rtol=1e-5)
    assert np.all(transformed.test.x.mean(axis=0) > 1)  # test keeps its own shift
    np.testing.assert_array_equal(transformed.train.y, dataset.train.y)


def test_transform_by_name_and_saved_stats_match():
    _, stats = preprocess(from_arrays(X), "min_max")
    restored = MinMaxStats(**{key: np.array(value) for key, value in stats._asdict().items()})
    np.testing.assert_array_equal(transform("min_max", restored, X), apply_min_max(stats, X))
    assert isinstance(fit_standardize(X), StandardizeStats)


def test_unknown_method_suggests_one():
    with pytest.raises(ValueError, match=r"unknown preprocessing 'standardise' — did you mean "
                                         r"'standardize'\? valid: min_max, standardize"):
        preprocess(from_arrays(X), "standardise")


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    assert one_hot(np.array([1]), 2).dtype == np.float32


def test_one_hot_out_of_range():
    with pytest.raises(ValueError, match=r"one_hot: labels\[1\] = 3 is outside \[0, 3\)"):
        one_hot(np.array([0, 3]), 3)
