"""Where the training data (a pytree of arrays) lives during `fit`: on the device, or on the
host and streamed; and how a fused epoch gets its shuffled batches on this platform.

Both give `run(state, epoch) -> (state, summary)` (see `fdl.train.epoch.epoch_summary`) and
`replay(state, epoch) -> (last finite state, first failed step or -1)` over the
same batches in the same order (`fdl.data.order.batch_indices`).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fdl.data.stream import NpyStream, Prefetcher
from fdl.data.order import batch_indices
from fdl.train.epoch import (epoch_summary, host_batches, make_batches_epoch, make_host_epoch, make_replay_batches,
                             make_replay_epoch, make_step_epoch, make_train_epoch, num_examples,
                             replay_host_epoch, stage_epoch)
from fdl.train.state import data_key

__all__ = ["DEVICE_SHARE", "free_device_bytes", "fits_on_device", "default_feed", "device_epochs",
           "host_epochs"]


DEVICE_SHARE = 0.5  # the data may take this share of the device's free memory


def free_device_bytes(device=None) -> int:
    """Free memory of `device` in bytes; on a CPU, half the machine's physical memory."""
    device = device or jax.devices()[0]
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


def device_epochs(step, batch_size: int, metrics, fused: bool, data, *, feed: str = "auto"):
    """Epochs for data (a pytree with a leading example axis) that fits on the device.

    fused with feed "staged": each epoch's batches are cut on the host in the
    shared order and uploaded (the next epoch's while this one trains: `run`
    returns without waiting), and one `lax.scan` reads them in place; feed
    "gather": the data is uploaded once and the `lax.scan`'s steps gather
    their batches from the epoch's indices; "auto": `default_feed()`. Not
    fused: one call per step, the data on the device. Every way gives the same
    batches in the same order (`fdl.data.batch_indices`, drawn on the host).
    """
    feed = default_feed() if feed == "auto" else feed
    if feed not in ("gather", "staged"):
        raise ValueError(f"feed: expected 'auto', 'gather' or 'staged', got {feed!r}")
    n = num_examples(data)
    key = None

    def indices(state, epoch: int) -> np.ndarray:
        nonlocal key
        if key is None:  # the run's key, read once: it is the same for every epoch
            key = np.asarray(data_key(state))
        return batch_indices(key, epoch, n, batch_size)

    # No donation: the state an epoch starts from is kept until the epoch is
    # known to be finite, so a NaN never overwrites the last good state.
    if fused and feed == "staged":
        host_data = jax.tree.map(np.asarray, data)
        train_epoch, replay = make_batches_epoch(step, metrics), jax.jit(make_replay_batches(step))
        run = jax.jit(lambda state, batches: _summarized(*train_epoch(state, batches)))

        def batches(state, epoch):
            return jax.device_put(stage_epoch(host_data, indices(state, epoch)))

        return (lambda state, epoch: run(state, batches(state, epoch)),
                lambda state, epoch: replay(state, batches(state, epoch)))
    data = jax.device_put(jax.tree.map(jnp.asarray, data))
    if fused:
        train_epoch = make_train_epoch(step, batch_size, metrics)
        run = jax.jit(lambda state, data, rows: _summarized(*train_epoch(state, data, rows)))
    else:
        step_epoch, summarize = make_step_epoch(step, batch_size, metrics), jax.jit(_summarized)
        run = lambda state, data, rows: summarize(*step_epoch(state, data, rows))  # noqa: E731
    replay = jax.jit(make_replay_epoch(step))
    return (lambda state, epoch: run(state, data, indices(state, epoch)),
            lambda state, epoch: replay(state, data, indices(state, epoch)))


def _summarized(state, logs, train_metrics):
    return state, epoch_summary(state, logs, train_metrics)


def host_epochs(step, batch_size: int, metrics, data, stream: NpyStream | None):
    """Keep the data (numpy or memory-mapped) on the host; prefetch each epoch's batches."""
    run_host = make_host_epoch(step, batch_size, metrics)
    num_batches = num_examples(data) // batch_size

    def batches(state, epoch):
        if stream is not None:
            return stream.host_batches(data_key(state), epoch, batch_size)
        return host_batches(state, data, epoch, batch_size)

    summarize = jax.jit(_summarized)

    def run(state, epoch):
        with Prefetcher(batches(state, epoch), size=stream.prefetch if stream is not None else 2) as prefetched:
            return summarize(*run_host(state, prefetched, num_batches))

    return run, lambda state, epoch: replay_host_epoch(step, state, batches(state, epoch))
