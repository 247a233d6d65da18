"""Many hosts: one training program over the devices of several processes, through `jax.distributed`.

Every process runs the same script (or `fdl train`) with its own `process_id`;
after `initialize`, `jax.devices()` lists every process's devices, and
`fit(..., mesh="all")` trains data-parallel over all of them: each process
gives its own devices their slices of every batch (fdl.train.mesh.place) and
XLA's collectives (gloo on CPU) do the rest. Every process has the same seed,
so all draw the same batch order; data on the device is held whole by each
process, data streamed from the host (an NpyStream, placement="host") is read
per process: only the rows of each batch that its own devices hold.

    initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # on host 0
    initialize("10.0.0.1:1234", num_processes=2, process_id=1)   # on host 1
    fit(model, data, mesh="all", batch_size=128)                  # on both

or `fdl train CONFIG --out SHARED_DIR --coordinator 10.0.0.1:1234 --num-processes 2
--process-id I` on each host (`--coordinator auto` in a SLURM, Open MPI or TPU job,
whose environment JAX reads). A process that dies is noticed by the others'
heartbeats: after `timeout_s` without one, JAX ends every other process
("the JAX distributed service detected fatal errors ... another task died"),
so a job never hangs; `fdl train ... --resume auto` on every host continues it
from the last collective checkpoint.
"""
from __future__ import annotations

import socket
import time

import jax

__all__ = ["initialize"]


def _parse(coordinator: str) -> tuple[str, int]:
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator: expected HOST:PORT (e.g. 127.0.0.1:1234), got {coordinator!r}")
    return host, int(port)


def _wait_for(host: str, port: int, timeout_s: float) -> bool:
    """Whether a TCP connection to host:port opens within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(1.0, timeout_s)):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def initialize(coordinator: str, num_processes: int | None = None, process_id: int | None = None, *,
               timeout_s: float = 60.0) -> None:
    """Joins this process to a `jax.distributed` job; call it before anything else uses JAX.

    Process 0 runs the coordinator at `coordinator`; every other process first
    waits up to `timeout_s` for it to answer, then registers. `timeout_s` is
    also the heartbeat timeout: a process silent that long (dead, or cut off)
    makes JAX end the others, without a Python error (exit status 134), so
    that none waits forever in a collective.

    Args:
      coordinator: "HOST:PORT" of process 0, or "auto": the cluster environment
        (SLURM, Open MPI, Cloud TPU) tells JAX the coordinator, the number of
        processes and this one's id (then leave those None).
      num_processes, process_id: this job's size and this process's place in it.
      timeout_s: seconds to wait for the coordinator, and for a heartbeat.

    Raises:
      ValueError: a malformed address or a process id outside [0, num_processes).
      ConnectionError: the coordinator did not answer within `timeout_s` (names it).
    """
    timeouts = dict(initialization_timeout=max(1, int(timeout_s)), heartbeat_timeout_seconds=max(1, int(timeout_s)))
    if coordinator == "auto":
        if num_processes is not None or process_id is not None:
            raise ValueError("coordinator 'auto' reads the number of processes and this process's id from the "
                             "cluster's environment — drop num_processes and process_id, or give HOST:PORT")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of other processes
        jax.distributed.initialize(**timeouts)
        return
    host, port = _parse(coordinator)
    if not (isinstance(num_processes, int) and num_processes >= 1 and isinstance(process_id, int)
            and 0 <= process_id < num_processes):
        raise ValueError(f"process_id: expected an int in [0, {num_processes}) for {num_processes} processes, "
                         f"got {process_id!r}")
    if process_id != 0 and not _wait_for(host, port, timeout_s):
        raise ConnectionError(f"coordinator {coordinator}: no answer within {timeout_s:g} s to process "
                              f"{process_id} of {num_processes} — start process 0 there first, or check the "
                              "address and the firewall")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id, **timeouts)
