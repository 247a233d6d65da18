"""Data parallelism over a `jax.sharding.Mesh`: one model trained on many devices.

The mesh has an axis "data". Every batch is sharded along its example axis
over "data" (device i holds rows i·B/N .. (i+1)·B/N - 1 of a batch of B), the
TrainState is replicated on every device, and the step stays ONE jitted
program: XLA's SPMD partitioner inserts the gradient all-reduce (no `pmap`, no
hand-written collectives). As the model is applied through `fdl.batched` (a
vmap over the whole global batch), a mean over the batch — a loss, BatchNorm's
statistics, an exact metric — is over the global batch, so N devices compute
the numbers of one device (to float rounding: the sums are split N ways).

    mesh = data_mesh(4)                            # the first 4 local devices
    fit(model, data, mesh=mesh, batch_size=128)    # 32 examples a device

With `shard_params="fsdp"` the state is sharded too (FSDP, ZeRO-3 style): each
array of the params and optimizer state is split over "data" along its largest
axis that the devices divide (an array with none stays replicated), and every
step's new state is constrained to the same sharding; XLA gathers the params
for the compute and reduce-scatters the gradients. Each device then holds ~1/N
of the state.

A mesh may also have a "model" axis (`data_mesh(8, model=2)`: 4 × 2 devices):
the batch is split over "data" only, and every array of the params and
optimizer state is split over "model" along its largest axis that the model
axis divides (a Dense kernel (in, out) along out when out is the larger; with
fsdp, its next largest along "data"). The step is still one program: XLA's
SPMD partitioner propagates the shardings through the model and adds the
collectives that tensor parallelism needs.

    mesh = data_mesh(4, model=2)                   # 2 (data) × 2 (model) devices
    fit(model, data, mesh=mesh, batch_size=128)    # 64 examples a data shard
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DATA_AXIS", "MODEL_AXIS", "SHARD_PARAMS", "data_mesh", "as_mesh", "check_divisible", "replicated",
           "examples_sharding", "batches_sharding", "state_sharding", "constrain_state", "place", "host_copy",
           "process_rows", "place_process_rows"]

DATA_AXIS = "data"
MODEL_AXIS = "model"
SHARD_PARAMS = (None, "fsdp")  # how the TrainState lies on the mesh: replicated, or split over "data"


def data_mesh(devices: int | str | None = "all", *, model: int = 1) -> Mesh:
    """A mesh over the first `devices` local devices ("all": every one — over several processes
    started with `jax.distributed`, every device of every process): 1-D with axis "data", or,
    with `model` > 1, (devices / model, model) with axes ("data", "model")."""
    local = jax.local_devices()
    if devices in ("all", None):
        chosen = jax.devices()
    elif isinstance(devices, bool) or not isinstance(devices, int) or not 1 <= devices <= len(local):
        raise ValueError(f"devices: expected 'all' or an int in [1, {len(local)}] (the local "
                         f"{local[0].platform} devices), got {devices!r}")
    else:
        chosen = local[:devices]
    if isinstance(model, bool) or not isinstance(model, int) or model < 1 or len(chosen) % model:
        divisors = [d for d in range(1, len(chosen) + 1) if len(chosen) % d == 0]
        raise ValueError(f"model: expected a number of devices that divides the {len(chosen)} devices "
                         f"({', '.join(map(str, divisors))}), got {model!r}")
    if model == 1:
        return Mesh(np.array(chosen), (DATA_AXIS,))
    return Mesh(np.array(chosen).reshape(len(chosen) // model, model), (DATA_AXIS, MODEL_AXIS))


def as_mesh(mesh: Mesh | int | str | None) -> Mesh | None:
    """`fit`'s `mesh` argument as a Mesh with a "data" axis (None: one device, no mesh)."""
    if mesh is None or isinstance(mesh, Mesh):
        if mesh is not None and DATA_AXIS not in mesh.axis_names:
            raise ValueError(f"mesh: expected an axis named {DATA_AXIS!r} (the batch is sharded over it), "
                             f"got axes {mesh.axis_names} — build it with fdl.train.mesh.data_mesh(N)")
        return mesh
    return data_mesh(mesh)


def check_divisible(name: str, batch_size: int, mesh: Mesh) -> None:
    """One-line error when `batch_size` does not split evenly over the mesh's data axis."""
    devices = mesh.shape[DATA_AXIS]
    if batch_size % devices:
        lower, upper = batch_size // devices * devices, -(-batch_size // devices) * devices
        nearest = " or ".join(str(size) for size in (lower, upper) if size > 0)
        raise ValueError(f"{name}: {batch_size} examples do not split over {devices} devices — use a "
                         f"multiple of {devices}, e.g. {nearest}")


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (the TrainState, a validation split)."""
    return NamedSharding(mesh, PartitionSpec())


def examples_sharding(mesh: Mesh) -> NamedSharding:
    """A batch's leading (example) axis split over "data": for every leaf of a (batch, ...) pytree."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def batches_sharding(mesh: Mesh) -> NamedSharding:
    """Stacked batches (steps, batch, ...): each batch's example axis split over "data"."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def _split_largest_axes(leaf, mesh: Mesh, names: tuple[str, ...]) -> NamedSharding:
    """`leaf` split over each mesh axis of `names` in turn, along its largest array axis left that
    the mesh axis divides; an array axis no mesh axis divides (and a scalar) stays whole."""
    shape = getattr(leaf, "shape", ())
    spec, free = [None] * len(shape), sorted(range(len(shape)), key=lambda a: -shape[a])
    for name in names:
        size = mesh.shape[name]
        fitting = [axis for axis in free if shape[axis] % size == 0] if size > 1 else []
        if fitting:
            spec[fitting[0]] = name
            free.remove(fitting[0])
    return NamedSharding(mesh, PartitionSpec(*spec))


def state_sharding(state, mesh: Mesh, shard_params: str | None):
    """The NamedSharding of every leaf of a TrainState: replicated, split over a "model" axis, or
    FSDP (see the module docstring)."""
    if shard_params not in SHARD_PARAMS:
        raise ValueError(f"shard_params: expected None (replicated) or 'fsdp', got {shard_params!r}")
    names = tuple(name for name, wanted in ((MODEL_AXIS, MODEL_AXIS in mesh.axis_names),
                                            (DATA_AXIS, shard_params == "fsdp")) if wanted)
    if not names:
        return jax.tree.map(lambda _: replicated(mesh), state)
    return state.replace(params=jax.tree.map(lambda a: _split_largest_axes(a, mesh, names), state.params),
                         opt_state=jax.tree.map(lambda a: _split_largest_axes(a, mesh, names), state.opt_state),
                         model_state=jax.tree.map(lambda _: replicated(mesh), state.model_state),
                         step=replicated(mesh), rng=replicated(mesh))


def constrain_state(step, shardings):
    """`step` whose new state keeps `shardings` (`jax.lax.with_sharding_constraint`), so a scan of
    steps carries the state with the sharding it was given."""

    def constrained(state, batch):
        new_state, logs = step(state, batch)
        return jax.lax.with_sharding_constraint(new_state, shardings), logs

    return constrained


def place(tree: Any, sharding) -> Any:
    """`jax.device_put(tree, sharding)`: onto the default device when sharding is None, else with
    one NamedSharding for every leaf or a pytree of them shaped like `tree`.

    Over several processes (`jax.distributed`) each process holds the same whole
    value (the same data, order and seed) and gives its own devices their slices
    of it (`jax.make_array_from_callback`), so nothing crosses between hosts. (Data
    streamed from the host is read per process instead: `place_process_rows`.)
    """
    if sharding is None:
        return jax.device_put(tree)
    if isinstance(sharding, NamedSharding):
        return jax.tree.map(lambda leaf: _place_leaf(leaf, sharding), tree)
    return jax.tree.map(_place_leaf, tree, sharding)


def _place_leaf(leaf, sharding: NamedSharding):
    if sharding.is_fully_addressable:
        return jax.device_put(leaf, sharding)
    value = np.asarray(leaf)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def host_copy(tree: Any) -> Any:
    """`tree` as host numpy arrays, whole, in every process: `jax.device_get`, except that an
    array split over several processes' devices (FSDP over hosts) is gathered first
    (`multihost_utils.process_allgather`, a collective: every process must call it).
    """
    def whole(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and not leaf.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return leaf

    return jax.device_get(jax.tree.map(whole, tree))


def process_rows(sharding: NamedSharding | None, batch_size: int) -> slice | np.ndarray:
    """The rows of a (batch_size, ...) batch that this process's devices hold under `sharding`.

    Read off `sharding.addressable_devices_indices_map` (no assumption on the
    order of the mesh's devices): the union of this process's devices' blocks
    along the example axis, in order — the layout that
    `jax.make_array_from_process_local_data` expects of a process's data.
    With one process (or no sharding) every row.

    Args:
      sharding: The batch's sharding (`examples_sharding(mesh)`), or None.
      batch_size: B, the global batch's examples.

    Returns:
      An index into a batch's example axis: `slice(start, stop)` when the
      rows are one block (the usual case: a mesh over `jax.devices()`), else
      a sorted (rows,) int array.
    """
    if sharding is None or sharding.is_fully_addressable:
        return slice(0, batch_size)
    blocks = sorted({index[0].indices(batch_size)[:2]
                     for index in sharding.addressable_devices_indices_map((batch_size,)).values()})
    if all(stop == next_start for (_, stop), (next_start, _) in zip(blocks, blocks[1:])):
        return slice(blocks[0][0], blocks[-1][1])
    return np.concatenate([np.arange(start, stop) for start, stop in blocks])


def place_process_rows(tree: Any, sharding: NamedSharding | None, batch_size: int) -> Any:
    """The global (batch_size, ...) batch of which `tree` holds this process's rows.

    `tree` is a pytree of (rows, ...) arrays: the rows `process_rows(sharding,
    batch_size)` of a batch. Each process passes its own rows and nothing
    crosses between hosts (`jax.make_array_from_process_local_data`). With one
    process this is `jax.device_put(tree, sharding)`, the whole batch.
    """
    if sharding is None or sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(
        sharding, leaf, (batch_size, *leaf.shape[1:])), tree)
