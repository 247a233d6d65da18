"""Tests of the epoch-order contract shared with the training engine."""
import jax
import numpy as np
import pytest

from fdl.data import batch_indices, epoch_permutation

KEY = jax.random.key(0)


def test_permutation_is_the_documented_contract():
    expected = jax.random.permutation(jax.random.fold_in(KEY, 3), 10)
    np.testing.assert_array_equal(epoch_permutation(KEY, 3, 10), expected)
    assert epoch_permutation(KEY, 3, 10).dtype == np.int32
    np.testing.assert_array_equal(np.sort(epoch_permutation(KEY, 3, 10)), np.arange(10))


def test_epochs_differ_and_repeat():
    np.testing.assert_array_equal(epoch_permutation(KEY, 1, 50), epoch_permutation(KEY, 1, 50))
    assert not np.array_equal(epoch_permutation(KEY, 1, 50), epoch_permutation(KEY, 2, 50))


def test_traced_epoch_equals_python_epoch():
    traced = jax.jit(epoch_permutation, static_argnums=2)(KEY, np.int32(4), 20)
    np.testing.assert_array_equal(traced, epoch_permutation(KEY, 4, 20))


def test_batch_indices_drop_the_last_partial_batch():
    batches = batch_indices(KEY, 2, 23, 5)
    assert batches.shape == (4, 5) and batches.dtype == np.int32
    np.testing.assert_array_equal(batches.reshape(-1), epoch_permutation(KEY, 2, 23)[:20])


def test_batch_indices_under_jit_with_traced_epoch():
    jitted = jax.jit(batch_indices, static_argnums=(2, 3))
    np.testing.assert_array_equal(jitted(KEY, np.int32(1), 10, 3), batch_indices(KEY, 1, 10, 3))


@pytest.mark.parametrize("batch_size", [0, 11])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match=rf"batch_size must be in \[1, num_examples=10\], got "
                                         rf"{batch_size}"):
        batch_indices(KEY, 0, 10, batch_size)
