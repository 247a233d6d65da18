"""Tests of the epoch-order contract shared with the training engine."""
import jax
import numpy as np
import pytest

from fdl.data import batch_indices, epoch_permutation
from fdl.data.order import DATA_ORDER_STREAM

KEY = jax.random.key(0)


def test_permutation_is_the_documented_contract():
    """numpy's Philox generator keyed by (the key's two words, the data-order stream, the epoch)."""
    high, low = (int(w) for w in np.asarray(jax.random.key_data(KEY)))
    philox = np.random.Philox(key=[(high << 32) | low, (DATA_ORDER_STREAM << 32) | 3])
    expected = np.random.Generator(philox).permutation(10)
    np.testing.assert_array_equal(epoch_permutation(KEY, 3, 10), expected)
    assert epoch_permutation(KEY, 3, 10).dtype == np.int32
    np.testing.assert_array_equal(np.sort(epoch_permutation(KEY, 3, 10)), np.arange(10))


def test_a_raw_key_and_a_typed_key_give_the_same_order():
    raw = jax.random.key_data(KEY)
    np.testing.assert_array_equal(epoch_permutation(raw, 5, 30), epoch_permutation(KEY, 5, 30))
    np.testing.assert_array_equal(epoch_permutation(np.asarray(raw), 5, 30), epoch_permutation(KEY, 5, 30))
    assert not np.array_equal(epoch_permutation(jax.random.key(1), 5, 30), epoch_permutation(KEY, 5, 30))


def test_epochs_differ_and_repeat():
    np.testing.assert_array_equal(epoch_permutation(KEY, 1, 50), epoch_permutation(KEY, 1, 50))
    assert not np.array_equal(epoch_permutation(KEY, 1, 50), epoch_permutation(KEY, 2, 50))


def test_batch_indices_drop_the_last_partial_batch():
    batches = batch_indices(KEY, 2, 23, 5)
    assert batches.shape == (4, 5) and batches.dtype == np.int32
    np.testing.assert_array_equal(batches.reshape(-1), epoch_permutation(KEY, 2, 23)[:20])


@pytest.mark.parametrize("batch_size", [0, 11])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match=rf"batch_size must be in \[1, num_examples=10\], got "
                                         rf"{batch_size}"):
        batch_indices(KEY, 0, 10, batch_size)
