"""Tests of NpyStream (memory-mapped .npy batches) and the device Prefetcher."""
import gc
import threading
import time

import jax
import numpy as np
import pytest

from fdl.data import NpyStream, Prefetcher, batch_indices, epoch_permutation

KEY = jax.random.key(7)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(23, 3, 2)), rng.integers(0, 4, 23)  # float64 on disk
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy", x, y


@pytest.mark.parametrize("epoch", [0, 3])
def test_stream_order_equals_in_memory_order(files, epoch):
    x_path, y_path, x, y = files
    stream = NpyStream(x_path, y_path)
    with stream.epoch(KEY, epoch, 5) as batches:
        streamed = list(batches)
    index = np.asarray(batch_indices(KEY, epoch, 23, 5))
    assert len(streamed) == stream.num_batches(5) == 4
    for (x_batch, y_batch), rows in zip(streamed, index):
        assert isinstance(x_batch, jax.Array) and x_batch.dtype == np.float32
        np.testing.assert_array_equal(x_batch, x[rows].astype(np.float32))
        np.testing.assert_array_equal(y_batch, y[rows])
        assert y_batch.dtype == np.int32


def test_keep_last_partial_batch(files):
    x_path, _, x, _ = files
    stream = NpyStream(x_path)
    batches = list(stream.host_batches(KEY, 1, 5, drop_last=False))
    assert len(batches) == stream.num_batches(5, drop_last=False) == 5
    assert batches[-1][1] is None
    left_out = np.asarray(epoch_permutation(KEY, 1, 23))[-3:]
    np.testing.assert_array_equal(batches[-1][0], x[left_out].astype(np.float32))


def test_non_finite_value_names_file_epoch_and_batch(tmp_path):
    x = np.zeros((4, 2))
    x[np.asarray(batch_indices(KEY, 0, 4, 2))[1, 0], 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"x\.npy \(epoch 0, batch 1\)\[0\] holds nan"):
        list(NpyStream(tmp_path / "x.npy").host_batches(KEY, 0, 2))


def test_prefetcher_reraises_producer_errors():
    def batches():
        yield np.zeros(2)
        raise RuntimeError("disk gone")

    prefetcher = Prefetcher(batches())
    np.testing.assert_array_equal(next(prefetcher), np.zeros(2))
    with pytest.raises(RuntimeError, match="disk gone"):
        next(prefetcher)
    with pytest.raises(StopIteration):
        next(prefetcher)


def test_prefetcher_is_bounded_and_closes_early():
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield np.zeros(1)

    with Prefetcher(endless(), size=2) as prefetcher:
        next(prefetcher)
        time.sleep(0.3)
        assert len(produced) <= 1 + 2 + 1  # consumed, queued, one in hand
    assert not any(t.name == "fdl-prefetch" and t.is_alive() for t in threading.enumerate())


def test_abandoned_prefetcher_stops_its_thread():
    prefetcher = Prefetcher(iter(lambda: np.zeros(1), None))  # endless
    next(prefetcher)
    thread = prefetcher._thread
    del prefetcher
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.mark.parametrize("x, y, prefetch, message", [
    (np.zeros(4), None, 2, r"x\.npy: features have shape \(4,\) and dtype float64"),
    (np.array([["a"], ["b"]]), None, 2, r"features have shape \(2, 1\) and dtype <U1"),
    (np.zeros((4, 1)), np.zeros(3), 2, r"y\.npy: 3 labels for 4 examples"),
    (np.zeros((4, 1)), None, 0, r"prefetch must be >= 1, got 0"),
])
def test_stream_errors(tmp_path, x, y, prefetch, message):
    np.save(tmp_path / "x.npy", x)
    y_path = None
    if y is not None:
        y_path = tmp_path / "y.npy"
        np.save(y_path, y)
    with pytest.raises(ValueError, match=message):
        NpyStream(tmp_path / "x.npy", y_path, prefetch=prefetch)


@pytest.mark.parametrize("batch_size", [0, 5])
def test_batch_size_error_at_the_call(tmp_path, batch_size):
    """Raised by the call itself, before any batch is read or a thread starts."""
    np.save(tmp_path / "x.npy", np.zeros((4, 1)))
    stream = NpyStream(tmp_path / "x.npy")
    message = rf"NpyStream x\.npy: batch_size must be in \[1, 4\], got {batch_size}"
    for call in (lambda: stream.host_batches(KEY, 0, batch_size),
                 lambda: stream.epoch(KEY, 0, batch_size),
                 lambda: stream.num_batches(batch_size)):
        with pytest.raises(ValueError, match=message):
            call()


def test_one_stream_serves_any_key_and_batch_size(files):
    """The stream holds only the files: two runs with different keys and batch sizes share it."""
    x_path, y_path, x, y = files
    stream = NpyStream(x_path, y_path)
    for key, batch_size in [(KEY, 5), (jax.random.key(3), 7)]:
        index = np.asarray(batch_indices(key, 2, 23, batch_size))
        batches = list(stream.host_batches(key, 2, batch_size))
        assert len(batches) == len(index) == stream.num_batches(batch_size)
        for (x_batch, y_batch), rows in zip(batches, index):
            np.testing.assert_array_equal(x_batch, x[rows].astype(np.float32))
            np.testing.assert_array_equal(y_batch, y[rows])


def test_prefetcher_size_error():
    with pytest.raises(ValueError, match="Prefetcher: size must be >= 1, got 0"):
        Prefetcher([], size=0)
