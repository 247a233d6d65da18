"""`RequestBatcher`: concurrent prediction requests gathered into compiled calls of a few fixed sizes.

Each request is n examples. One worker thread takes the oldest request and,
while fewer than `max_batch` examples wait, lets others join it until it has
waited `window_s` since it arrived; then it runs `predict` once on up to
`max_batch` of the waiting examples, padded to the next of
`batch_sizes(max_batch)` (1, 2, 4, ... up to max_batch) by repeating the first
row. Every request gets its own rows back, in order; one larger than max_batch
is split over several calls. Compile each size once (`warm_up`) before serving
and no request compiles anything.

    >>> from fdl.runs.batching import RequestBatcher
    >>> batcher = RequestBatcher(lambda x: 2 * x, (3,), max_batch=4, window_s=0.003)  # predict: (size, 3) -> (size, 3)
    >>> compile_s = batcher.warm_up()   # one call per size: 1, 2, 4 (a jitted predict compiles each once)
    >>> batcher.start()
    >>> batcher.submit(np.ones((3, 3), np.float32)).result()  # from any thread; 3 rows, padded to 4
    array([[2., 2., 2.],
           [2., 2., 2.],
           [2., 2., 2.]], dtype=float32)
    >>> batcher.stats()
    {'calls': 1, 'requests': 1, 'examples': 3, 'calls_by_size': {1: 0, 2: 0, 4: 1}}
    >>> batcher.close()
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import queue
import threading
import time
from typing import Callable

import numpy as np

from fdl.train.evaluate import padded_batches

__all__ = ["RequestBatcher", "batch_sizes"]


def batch_sizes(max_batch: int, window_s: float = 0.0) -> tuple[int, ...]:
    """The sizes of the compiled calls: the powers of two below `max_batch`, then `max_batch`.

    Checks the batching settings too, so a caller can refuse them before loading a model.

    Raises:
      ValueError: max_batch is not a positive int, or window_s is negative.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch: expected a positive number of examples per compiled call, got "
                         f"{max_batch!r} — use 1 to turn request batching off")
    if not window_s >= 0:
        raise ValueError(f"batch window: expected a duration >= 0 seconds, got {window_s!r} — 0 sends "
                         "each call as soon as the worker is free")
    return tuple(1 << k for k in range(max_batch.bit_length()) if 1 << k < max_batch) + (max_batch,)


@dataclasses.dataclass
class _Request:
    """One submitted request: its examples, the outputs computed so far, the future to answer."""

    x: np.ndarray                      # (n, *input_shape)
    future: concurrent.futures.Future
    arrived: float = dataclasses.field(default_factory=time.monotonic)  # when submitted, monotonic seconds
    taken: int = 0                     # examples handed to a call so far
    chunks: list = dataclasses.field(default_factory=list)  # their outputs, in order

    @property
    def waiting(self) -> int:
        return len(self.x) - self.taken


class RequestBatcher:
    """Runs `predict` on the examples of concurrent requests, gathered and padded to fixed sizes.

    Args:
      predict: `predict(x) -> outputs`, x: (size, *input_shape) float32, outputs: (size, ...)
        one array; called from one thread at a time, with sizes from `batch_sizes(max_batch)`.
      input_shape: the shape of one example (for `warm_up`).
      max_batch: the most examples in one call; 1 turns batching off.
      window_s: how long, in seconds from its arrival, the oldest waiting request waits for others to
        join its call.

    Raises:
      ValueError: max_batch is not a positive int, or window_s is negative.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], input_shape: tuple[int, ...], *,
                 max_batch: int = 64, window_s: float = 0.003):
        self.sizes = batch_sizes(max_batch, window_s)
        self.predict, self.input_shape = predict, tuple(input_shape)
        self.max_batch, self.window_s = max_batch, window_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="fdl-request-batcher", daemon=True)
        self._lock = threading.Lock()
        self._closed = False
        self._counts = {"calls": 0, "requests": 0, "examples": 0}
        self._calls_by_size: collections.Counter = collections.Counter()

    def warm_up(self) -> float:
        """Calls `predict` once at every size on zeros, so serving compiles nothing; returns the seconds it took.

        Raises:
          TypeError: predict gives something else than one array with a row per example.
        """
        started = time.perf_counter()
        for size in self.sizes:
            outputs = self.predict(np.zeros((size, *self.input_shape), np.float32))
            if not isinstance(outputs, np.ndarray) or outputs.shape[:1] != (size,):
                shape = f" of shape {outputs.shape}" if hasattr(outputs, "shape") else ""
                raise TypeError(f"predict: expected one array of {size} rows for {size} examples, got "
                                f"{type(outputs).__name__}{shape} — serve a model with a single output")
        return time.perf_counter() - started

    def start(self) -> None:
        """Starts the worker thread that answers submitted requests."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, x: np.ndarray) -> concurrent.futures.Future:
        """Queues examples x: (n, *input_shape), n >= 1; the future's result is their outputs (n, ...).

        Raises:
          ValueError: x is not (n, *input_shape) with n >= 1.
          RuntimeError: the batcher is closed.
        """
        if x.ndim == 0 or x.shape[1:] != self.input_shape or len(x) == 0:
            single = " — give one example as x[None]" if x.shape == self.input_shape else ""
            raise ValueError(f"x: shape {x.shape}, expected (n, {', '.join(map(str, self.input_shape))}) with "
                             f"n >= 1{single}")
        if self._closed:
            raise RuntimeError("request batcher: closed — start a new server")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Request(x, future))
        return future

    def close(self, timeout_s: float = 10.0) -> None:
        """Answers the requests already queued, then stops the worker."""
        self._closed = True
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def stats(self) -> dict:
        """{"calls", "requests", "examples": answered since `start`, "calls_by_size": {size: calls}}."""
        with self._lock:
            return {**self._counts, "calls_by_size": {size: self._calls_by_size[size] for size in self.sizes}}

    def _work(self) -> None:
        pending: collections.deque = collections.deque()
        stopping = False
        while pending or not stopping:
            if not pending:
                stopping = self._take(pending, block=True)
                continue
            stopping = self._gather(pending) or stopping
            self._call(pending)

    def _take(self, pending: collections.deque, block: bool, timeout: float | None = None) -> bool:
        """Moves one queued request to `pending` (a cancelled one is dropped); True on the stop signal."""
        request = self._queue.get(block, timeout)
        if request is None:
            return True
        if request.future.set_running_or_notify_cancel():  # False: its client went away
            pending.append(request)
        return False

    def _gather(self, pending: collections.deque) -> bool:
        """Waits for requests to join `pending` until the oldest has waited the window; True on the stop signal.

        The window counts from the oldest request's arrival: requests that queued
        during the previous call have waited already and go at once.
        """
        deadline = pending[0].arrived + self.window_s
        while sum(request.waiting for request in pending) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if self._take(pending, block=remaining > 0, timeout=max(remaining, 0.0)):
                    return True
            except queue.Empty:
                return False
        return False

    def _call(self, pending: collections.deque) -> None:
        """One call of `predict` on up to max_batch waiting examples; answers the requests it completes."""
        parts, rows = [], 0
        for request in pending:
            count = min(request.waiting, self.max_batch - rows)
            if count == 0:
                break
            parts.append((request, request.taken, request.taken + count))
            rows += count
        size = next(size for size in self.sizes if size >= rows)
        try:
            x = np.concatenate([request.x[start:stop] for request, start, stop in parts])
            outputs = self.predict(next(padded_batches(x, None, size))[0])
        except Exception as error:  # a model error fails these requests; the worker serves on
            for request, _, _ in parts:
                pending.remove(request)
                request.future.set_exception(error)
            return
        offset, done = 0, []
        for request, start, stop in parts:
            request.chunks.append(outputs[offset:offset + stop - start])
            request.taken, offset = stop, offset + stop - start
            if request.waiting == 0:
                done.append(pending.popleft())  # parts start at the oldest request: completed ones lead
        with self._lock:  # counted before answering, so a client that reads them next sees its call
            self._calls_by_size[size] += 1
            self._counts["calls"] += 1
            self._counts["examples"] += rows
            self._counts["requests"] += len(done)
        for request in done:
            request.future.set_result(np.concatenate(request.chunks))
