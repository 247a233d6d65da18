"""Where the training data (a pytree of arrays) lives during `fit`: on the device, or on the
host and streamed.

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
from fdl.train.epoch import (epoch_summary, host_batches, make_host_epoch, make_replay_epoch, make_step_epoch,
                             make_train_epoch, num_examples, replay_host_epoch)
from fdl.train.state import data_key

__all__ = ["DEVICE_SHARE", "free_device_bytes", "fits_on_device", "device_epochs", "host_epochs"]


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


def device_epochs(step, batch_size: int, metrics, fused: bool, data):
    """Upload the data (a pytree with a leading example axis) once; epochs fused in one
    `lax.scan` (or one call per step)."""
    data = jax.device_put(jax.tree.map(jnp.asarray, data))
    # No donation: the state an epoch starts from is kept until the epoch is
    # known to be finite, so a NaN never overwrites the last good state.
    if fused:
        train_epoch = make_train_epoch(step, batch_size, metrics)
        run = jax.jit(lambda state, data, epoch: _summarized(*train_epoch(state, data, epoch)))
    else:
        step_epoch, summarize = make_step_epoch(step, batch_size, metrics), jax.jit(_summarized)
        run = lambda state, data, epoch: summarize(*step_epoch(state, data, epoch))  # noqa: E731
    replay = jax.jit(make_replay_epoch(step, batch_size))
    return (lambda state, epoch: run(state, data, epoch),
            lambda state, epoch: replay(state, data, epoch))


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
