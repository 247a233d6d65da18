"""Where the training data (a pytree of arrays) lives during `fit`: on the device, or on the
host and streamed; and how a fused epoch gets its shuffled batches on this platform.

Every placement gives an `Epochs`: the run's epochs, whole (`run`) or in chunks
(`begin`, `advance`, `finish`, so a long epoch can be checkpointed and resumed
mid-way), and `replay` to find a failed step — all over the same batches in
the same order (`fdl.data.order.batch_indices`), with the same numbers.
"""
from __future__ import annotations

import itertools
import os

import jax
import numpy as np

from fdl.data.order import batch_indices
from fdl.data.stream import NpyStream, Prefetcher
from fdl.train.epoch import (EpochProgress, HostEpoch, StepEpoch, advance_epoch, begin_epoch, epoch_summary,
                             finish_epoch, make_batches_epoch, make_replay_batches,
                             make_replay_epoch, make_train_epoch, num_examples, progress_is_finite,
                             replay_host_epoch, stage_epoch, take)
from fdl.train.mesh import (batches_sharding, examples_sharding, place, place_process_rows, process_rows,
                            replicated)
from fdl.train.state import TrainState, data_key

__all__ = ["DEVICE_SHARE", "free_device_bytes", "fits_on_device", "default_feed", "Epochs", "device_epochs",
           "host_epochs"]


DEVICE_SHARE = 0.5  # the data may take this share of the device's free memory


def free_device_bytes(device=None) -> int:
    """Free memory of `device` in bytes; on a CPU, half the machine's physical memory."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def fits_on_device(data) -> bool:
    """Whether the data's arrays together take at most DEVICE_SHARE of the device's free memory."""
    return sum(np.asarray(a).nbytes for a in jax.tree.leaves(data)) <= DEVICE_SHARE * free_device_bytes()


def default_feed(platform: str | None = None) -> str:
    """How the fused epoch gets its shuffled batches on `platform` (default: JAX's default backend).

    "staged": the host cuts the epoch's batches (numpy, in the shared order) and
    uploads them, and the compiled epoch scans them in place — on XLA:CPU a
    gather inside the program is the slow part of a small model's step
    (experiments/benchmark_engine.py). "gather": the data is uploaded once and
    each step gathers its batch on the device (accelerators gather fast and
    the upload would cross the bus every epoch).
    """
    return "staged" if (platform or jax.default_backend()) == "cpu" else "gather"


def _summarized(state, logs, train_metrics):
    return state, epoch_summary(state, logs, train_metrics)


class Epochs:
    """A run's epochs on one placement, whole or in chunks.

    `run(state, epoch) -> (state, summary)`: the whole epoch, queued (one
    program when fused); `summary` is `fdl.train.epoch.epoch_summary`'s.
    `begin(state, epoch) -> EpochProgress`, `advance(progress, epoch, start,
    stop)` (steps start .. stop - 1 of the epoch) and `finish(progress) ->
    (state, summary)` take it in chunks with the numbers of `run`.
    `is_finite(progress)`: () bool, whether a chunk may be checkpointed.
    `donates`: whether `advance` reuses the buffers of the progress it is given
    (the stepped paths do, so a step allocates nothing).
    `replay(state, epoch, start=0) -> (last finite state, first failed step of
    the epoch or -1)`, from a state after `start` steps of the epoch.
    No state is donated: the state an epoch starts from is kept until the
    epoch is known to be finite, so a NaN never overwrites the last good state.
    With a `mesh` (fdl.train.mesh) every batch is sharded over its "data"
    axis and the data kept on the device is replicated.
    """

    donates = False

    def __init__(self, batch_size: int, metrics, data, mesh=None):
        self.steps_per_epoch = num_examples(data) // batch_size
        self._num_examples, self._batch_size = num_examples(data), batch_size
        self._replicated = None if mesh is None else replicated(mesh)
        self._batches = None if mesh is None else batches_sharding(mesh)        # (steps, batch, ...)
        self._examples = None if mesh is None else examples_sharding(mesh)      # (batch, ...)
        self._key = self._rows = self._device_rows = None
        self._finish = jax.jit(lambda progress: _summarized(*finish_epoch(metrics, progress)))
        self.is_finite = jax.jit(progress_is_finite)

    def indices(self, state: TrainState, epoch: int) -> np.ndarray:
        """(steps_per_epoch, batch_size) int: the epoch's batches (`fdl.data.batch_indices`)."""
        if self._key is None:  # the run's key, read once: it is the same for every epoch
            self._key = np.asarray(data_key(state))
        if self._rows is None or self._rows[0] != epoch:  # drawn once for all the chunks of an epoch
            self._rows = epoch, batch_indices(self._key, epoch, self._num_examples, self._batch_size)
        return self._rows[1]

    def device_indices(self, state: TrainState, epoch: int) -> jax.Array:
        """`indices` on the device (each batch's rows sharded like the batch), uploaded once an epoch."""
        if self._device_rows is None or self._device_rows[0] != epoch:
            self._device_rows = epoch, place(self.indices(state, epoch), self._batches)
        return self._device_rows[1]

    def run(self, state: TrainState, epoch: int):
        return self.finish(self.advance(self.begin(state, epoch), epoch, 0, self.steps_per_epoch))

    def finish(self, progress: EpochProgress):
        return self._finish(progress)


class _FusedEpochs(Epochs):
    """Each epoch (or chunk) one `lax.scan`; `feed` says how its steps get their batches."""

    def __init__(self, step, batch_size: int, metrics, data, feed: str, mesh=None):
        super().__init__(batch_size, metrics, data, mesh)
        self._staged = feed == "staged"
        spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct((batch_size, *a.shape[1:]), a.dtype), data)
        self._begin = jax.jit(lambda state: begin_epoch(step, metrics, state, spec, self.steps_per_epoch))
        if self._staged:
            self._data = jax.tree.map(np.asarray, data)
            train_epoch = make_batches_epoch(step, metrics)
            self._run = jax.jit(lambda state, batches: _summarized(*train_epoch(state, batches)))
            self._advance = jax.jit(lambda progress, batches: advance_epoch(step, metrics, progress, batches))
            self._replay = jax.jit(make_replay_batches(step))
        else:
            self._data = place(jax.tree.map(np.asarray, data), self._replicated)
            train_epoch = make_train_epoch(step, batch_size, metrics)
            self._run = jax.jit(lambda state, data, rows: _summarized(*train_epoch(state, data, rows)))
            self._advance = jax.jit(lambda progress, data, rows: advance_epoch(
                step, metrics, progress, rows, lambda batch_rows: take(data, batch_rows)))
            self._replay = jax.jit(make_replay_epoch(step))

    def _feed(self, state, epoch: int, start: int = 0, stop: int | None = None) -> tuple:
        """The arguments after the state that give steps start .. stop - 1 their batches."""
        # staged: the batches cut on the host and uploaded (the next epoch's while this one trains)
        if self._staged:
            return (place(stage_epoch(self._data, self.indices(state, epoch)[start:stop]), self._batches),)
        return self._data, self.device_indices(state, epoch)[start:stop]

    def run(self, state, epoch):
        return self._run(state, *self._feed(state, epoch))

    def begin(self, state, epoch):
        return self._begin(state)

    def advance(self, progress, epoch, start, stop):
        return self._advance(progress, *self._feed(progress.state, epoch, start, stop))

    def replay(self, state, epoch, start=0):
        return self._replay(state, *self._feed(state, epoch, start))


class _SteppedEpochs(Epochs):
    """One compiled call per step from the host, the data on the device."""

    donates = True

    def __init__(self, step, batch_size: int, metrics, data, mesh=None):
        super().__init__(batch_size, metrics, data, mesh)
        self._data = place(jax.tree.map(np.asarray, data), self._replicated)
        self._stepper = StepEpoch(step, metrics)
        self._replay = jax.jit(make_replay_epoch(step))

    def begin(self, state, epoch):
        return self._stepper.begin(state, self._data, self.device_indices(state, epoch))

    def advance(self, progress, epoch, start, stop):
        return self._stepper.advance(progress, self._data, self.device_indices(progress.state, epoch), stop - start)

    def replay(self, state, epoch, start=0):
        return self._replay(state, self._data, self.device_indices(state, epoch)[start:])


class _HostEpochs(Epochs):
    """The data (numpy, memory-mapped or an NpyStream) stays on the host; batches are prefetched.

    Over several processes each process reads only the rows of each batch that
    its own devices hold (`fdl.train.mesh.process_rows`, in the shared order)
    and places them as its part of the global batch (`place_process_rows`).
    """

    donates = True

    def __init__(self, step, batch_size: int, metrics, data, stream: NpyStream | None, mesh=None):
        super().__init__(batch_size, metrics, data, mesh)
        self._step, self._host_data, self._stream = step, data, stream
        self._host = HostEpoch(step, metrics)
        self._prefetch = stream.prefetch if stream is not None else 2
        self._process_rows = process_rows(self._examples, batch_size)  # this process's rows of every batch

    def _host_batches(self, state, epoch: int, start: int = 0):
        """This process's rows of the epoch's host batches from batch `start` on (read lazily)."""
        if self._stream is not None:
            return self._stream.host_batches(data_key(state), epoch, self._batch_size, start=start,
                                             rows=self._process_rows)
        return (take(self._host_data, rows) for rows in self.indices(state, epoch)[start:, self._process_rows])

    def _place(self, batch):
        """A batch of this process's rows as the global batch on the devices."""
        return place_process_rows(batch, self._examples, self._batch_size)

    def begin(self, state, epoch):
        # begin reads only the shapes of a batch: the global batch's, from this process's rows
        first = jax.tree.map(lambda rows: np.broadcast_to(rows[:1], (self._batch_size, *rows.shape[1:])),
                             next(self._host_batches(state, epoch)))
        return self._host.begin(state, first, self.steps_per_epoch)

    def advance(self, progress, epoch, start, stop):
        chunk = itertools.islice(self._host_batches(progress.state, epoch, start), stop - start)
        with Prefetcher(chunk, size=self._prefetch, place=self._place) as prefetched:
            return self._host.advance(progress, prefetched)

    def replay(self, state, epoch, start=0):
        return replay_host_epoch(self._step, state, map(self._place, self._host_batches(state, epoch, start)))


def device_epochs(step, batch_size: int, metrics, fused: bool, data, *, feed: str = "auto", mesh=None) -> Epochs:
    """Epochs for data (a pytree with a leading example axis) that fits on the device.

    fused with feed "staged": each epoch's batches are cut on the host in the
    shared order and uploaded (the next epoch's while this one trains: `run`
    returns without waiting), and one `lax.scan` reads them in place; feed
    "gather": the data is uploaded once and the `lax.scan`'s steps gather
    their batches from the epoch's indices; "auto": `default_feed()`. Not
    fused: one call per step, the data on the device. Every way gives the same
    batches in the same order (`fdl.data.batch_indices`, drawn on the host).
    With a `mesh` (fdl.train.mesh) the batches are sharded over its "data"
    axis, the data on the device replicated.
    """
    feed = default_feed() if feed == "auto" else feed
    if feed not in ("gather", "staged"):
        raise ValueError(f"feed: expected 'auto', 'gather' or 'staged', got {feed!r}")
    if fused:
        return _FusedEpochs(step, batch_size, metrics, data, feed, mesh)
    return _SteppedEpochs(step, batch_size, metrics, data, mesh)


def host_epochs(step, batch_size: int, metrics, data, stream: NpyStream | None, *, mesh=None) -> Epochs:
    """Keep the data (numpy or memory-mapped) on the host; prefetch each epoch's batches (each
    device's slice straight to its device, with a mesh)."""
    return _HostEpochs(step, batch_size, metrics, data, stream, mesh)
