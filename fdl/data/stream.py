"""Streaming data bigger than device memory from memory-mapped .npy files.

`NpyStream` reads the batches of an epoch in the shared epoch order
(`fdl.data.batch_indices`), so streamed training sees exactly the batches an
in-memory run with the same key would. A `Prefetcher` thread copies the next
batches to the device while the current step runs (double buffering).

    >>> np.save("x.npy", x)                                  # (n, 40) float32, n = 256
    >>> np.save("y.npy", y)                                  # (n,) int32
    >>> stream = NpyStream("x.npy", "y.npy")
    >>> key = jax.random.key(0)
    >>> for epoch in range(2):
    ...     with stream.epoch(key, epoch, batch_size=128) as batches:
    ...         shapes = [(x_batch.shape, y_batch.shape) for x_batch, y_batch in batches]
    >>> shapes                                               # device arrays, one epoch's batches
    [((128, 40), (128,)), ((128, 40), (128,))]
    >>> state, history = fdl.fit(model, stream, epochs=2, batch_size=128)  # fit streams it the same way
"""
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import jax
import numpy as np

from fdl.data.order import batch_indices, epoch_permutation
from fdl.data.validate import as_float32
from fdl.typing import PRNGKey

__all__ = ["NpyStream", "Prefetcher"]

_END = object()  # the producer finished


class _Failure:
    """An exception raised in the producer thread, carried to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


def _produce(batches: Iterator, out: queue.Queue, stop: threading.Event, place: Callable) -> None:
    """Thread body: `place` each batch on the device(s) into `out` until done, failed or stopped.

    It holds no reference to its `Prefetcher`, so an abandoned prefetcher is
    garbage collected and its `__del__` stops this thread.
    """
    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)  # wake up regularly to notice `stop`
                return True
            except queue.Full:
                pass
        return False

    try:
        for batch in batches:
            if not put(place(batch)):
                return
        put(_END)
    except BaseException as error:  # noqa: BLE001 — re-raised in the consumer thread
        put(_Failure(error))


class Prefetcher:
    """Iterates `batches`, copying them to the device in a background thread.

    At most `size` device batches wait in a bounded queue, plus one being
    prepared, so host reading and the transfer overlap the training step.
    An exception in the thread is re-raised by the consumer's `next()`, with
    its original traceback. Use as a context manager (or call `close`) to stop
    the thread when leaving the loop early.

    Args:
        batches: Any iterable of pytrees of numpy arrays, e.g. (x, y) tuples.
        size: Batches prefetched ahead, >= 1 (2 = double buffering).
        device: Target device or sharding; None for JAX's default device.
        place: How a batch reaches the devices instead of `jax.device_put(batch,
            device)`, e.g. a process's rows of a global batch
            (`fdl.train.mesh.place_process_rows`); then leave `device` None.

    Raises:
        ValueError: size < 1, or both `device` and `place`.
    """

    def __init__(self, batches: Iterable, size: int = 2, device=None, *, place: Callable | None = None):
        self._stop = threading.Event()  # first, so that __del__ works even after a bad size
        if size < 1:
            raise ValueError(f"Prefetcher: size must be >= 1, got {size}")
        if place is not None and device is not None:
            raise ValueError(f"Prefetcher: device={device!r} and place= both say where batches go — give one")
        place = place or (lambda batch: jax.device_put(batch, device))
        self._queue = queue.Queue(maxsize=size)
        self._finished = False
        self._thread = threading.Thread(target=_produce, daemon=True, name="fdl-prefetch",
                                        args=(iter(batches), self._queue, self._stop, place))
        self._thread.start()

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stops and joins the producer thread; further `next` calls stop iteration."""
        self._finished = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        self._stop.set()  # no join here: __del__ may run on any thread


def _gather(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """array[index] for a memory map, reading the rows in file order (fewer seeks)."""
    order = np.argsort(index)
    rows = np.empty((index.shape[0], *array.shape[1:]), array.dtype)
    rows[order] = array[index[order]]
    return rows


class NpyStream:
    """Memory-mapped `.npy` features (and labels), read batch by batch in the epoch order.

    The stream holds only the files; whoever trains supplies the order per call
    (`key`, `epoch`, `batch_size`, in the order of `fdl.data.batch_indices`), so
    one stream serves any run and `fdl.fit(model, stream, batch_size=...)`
    reads the files in that run's order. Only the rows of the current batch
    are read from disk; features are converted to float32 per batch (rules of
    `fdl.data.validate`; an error names the file, epoch, batch and the row
    within the batch).

    Args:
        x_path: .npy file of (n, *feature_shape) real-valued features.
        y_path: .npy file of (n,) integer labels or (n, ...) float targets, or None.
        prefetch: Batches copied to the device ahead of the consumer by `epoch`.

    Raises:
        ValueError: a non-numeric or rank-1 x, x and y of different lengths, or
            prefetch < 1.
    """

    def __init__(self, x_path, y_path=None, *, prefetch: int = 2):
        self.x_path = Path(x_path)
        self.y_path = None if y_path is None else Path(y_path)
        self.x = np.load(self.x_path, mmap_mode="r")
        self.y = None if y_path is None else np.load(self.y_path, mmap_mode="r")
        if self.x.ndim < 2 or self.x.dtype.kind not in "fiub":
            raise ValueError(f"{self.x_path}: features have shape {self.x.shape} and dtype "
                             f"{self.x.dtype}; expected (n, *feature_shape) real numbers")
        if self.y is not None and self.y.shape[:1] != self.x.shape[:1]:
            raise ValueError(f"{self.y_path}: {self.y.shape[0] if self.y.ndim else 0} labels "
                             f"for {self.x.shape[0]} examples in {self.x_path}")
        if prefetch < 1:
            raise ValueError(f"NpyStream: prefetch must be >= 1, got {prefetch}")
        self.prefetch = prefetch

    @property
    def num_examples(self) -> int:
        return self.x.shape[0]

    def num_batches(self, batch_size: int, *, drop_last: bool = True) -> int:
        """Number of batches per epoch for `batch_size` (see `host_batches`)."""
        self._check_batch_size(batch_size)
        full, partial = divmod(self.num_examples, batch_size)
        return full + int(partial > 0 and not drop_last)

    def _check_batch_size(self, batch_size: int) -> None:
        if not 1 <= batch_size <= self.num_examples:
            raise ValueError(f"NpyStream {self.x_path.name}: batch_size must be in "
                             f"[1, {self.num_examples}], got {batch_size}")

    def host_batches(self, key: PRNGKey, epoch: int, batch_size: int, *, drop_last: bool = True,
                     start: int = 0, rows: slice | np.ndarray | None = None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """One epoch's (x, y) numpy batches in order from batch `start` on, without prefetching.

        Batches follow `batch_indices(key, epoch, n, batch_size)`, computed once
        for the epoch on the host. With `rows`, only those rows of each batch
        are read from disk: a process's share of the global batch over several
        hosts (`fdl.train.mesh.process_rows`), the order still the shared one.

        Args:
            key: The run's data key, as passed to `batch_indices`.
            epoch: Epoch number.
            batch_size: Examples per batch, in [1, n].
            drop_last: Drop the last partial batch (the engine's contract). When
                False a final batch of the `n % batch_size` left-out examples
                follows; its different shape recompiles a jitted step.
            start: The first batch to read (an epoch resumed part-way).
            rows: The rows of each batch to read (a slice or an int array into
                the batch's example axis); None: all.

        Returns:
            An iterator of x (batch, *feature_shape) float32 and y (batch, ...)
            int32 labels or float32 targets (None without y_path); with `rows`,
            (rows, ...) each.

        Raises:
            ValueError: batch_size outside [1, n] (at the call, not at the first
                batch), or `rows` with drop_last=False and a partial last batch.
        """
        self._check_batch_size(batch_size)
        indices = np.asarray(batch_indices(key, epoch, self.num_examples, batch_size))
        left_out = self.num_examples % batch_size
        if rows is not None:
            if left_out and not drop_last:
                raise ValueError(f"NpyStream {self.x_path.name}: rows= reads a share of every full batch; "
                                 f"the last partial batch has no such share — use drop_last=True")
            indices = indices[:, rows]
        indices = list(indices)
        if left_out and not drop_last:
            indices.append(np.asarray(epoch_permutation(key, epoch, self.num_examples))[-left_out:])
        return self._read(indices[start:], epoch, start)

    def _read(self, indices: list[np.ndarray], epoch: int, start: int) -> Iterator:
        for number, index in enumerate(indices, start):
            where = f"(epoch {epoch}, batch {number})"
            yield (as_float32(_gather(self.x, index), f"{self.x_path.name} {where}"),
                   self._labels(index, where))

    def _labels(self, index: np.ndarray, where: str) -> np.ndarray | None:
        if self.y is None:
            return None
        labels = _gather(self.y, index)
        if labels.dtype.kind in "iub":
            return labels.astype(np.int32)
        return as_float32(labels, f"{self.y_path.name} {where}")

    def epoch(self, key: PRNGKey, epoch: int, batch_size: int, *, drop_last: bool = True,
              device=None) -> Prefetcher:
        """One epoch's batches (`host_batches`), prefetched to `device` in a background thread.

        Args:
            key: The run's data key.
            epoch: Epoch number.
            batch_size: Examples per batch, in [1, n].
            drop_last: See `host_batches`.
            device: Target device; None for JAX's default.

        Returns:
            A `Prefetcher` yielding (x, y) device arrays; use it in a `with` block.
        """
        return Prefetcher(self.host_batches(key, epoch, batch_size, drop_last=drop_last),
                          size=self.prefetch, device=device)
