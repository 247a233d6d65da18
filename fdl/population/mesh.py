"""How a population lies on the devices: a mesh with axis "population" (and "data").

The epoch is one `shard_map` manual over "population" only (`shard_population`):
each slice runs its members; a "data" axis stays with XLA's SPMD partitioner,
which splits each member's batches over it (`split_batches`), as
`fit(mesh=...)` splits one model's.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from fdl.train.mesh import DATA_AXIS

__all__ = ["AXIS", "population_mesh", "split_batches", "shard_population", "pad_members"]

AXIS = "population"


def population_mesh(mesh: Mesh | int | None = None, *, name: str = "mesh") -> Mesh:
    """The devices a population trains on, as a Mesh with axis "population" (and "data").

    Args:
      mesh: None: every device (`jax.devices()`) on a 1-D axis "population", each
        member's batch on one device. An int D: D devices per member on an axis
        "data", the rest (len(jax.devices()) // D) on "population". Or a Mesh with
        axes ("population", "data"), used as it is.
      name: the argument (or config key) an error names.

    Raises:
      ValueError: D not dividing the device count (the valid counts named), or a
        Mesh with other axes.
    """
    devices = jax.devices()
    if mesh is None:
        return Mesh(np.asarray(devices), (AXIS,))
    if isinstance(mesh, Mesh):
        if sorted(mesh.axis_names) != sorted((AXIS, DATA_AXIS)):
            raise ValueError(f"{name}: expected the axes ({AXIS!r}, {DATA_AXIS!r}), got {mesh.axis_names} — "
                             f"pass mesh=D (D devices per member) or build Mesh(devices, ({AXIS!r}, {DATA_AXIS!r}))")
        return mesh
    if isinstance(mesh, bool) or not isinstance(mesh, int) or mesh < 1 or len(devices) % mesh:
        divisors = ", ".join(str(d) for d in range(1, len(devices) + 1) if len(devices) % d == 0)
        raise ValueError(f"{name}: expected the devices per member, an int that divides the {len(devices)} "
                         f"devices ({divisors}), got {mesh!r}")
    return Mesh(np.asarray(devices).reshape(len(devices) // mesh, mesh), (AXIS, DATA_AXIS))


def split_batches(step, data_axis: str):
    """`step` whose batch has every leaf's example axis split over the mesh axis `data_axis` (inside
    `shard_population`, where that axis is left to XLA's SPMD partitioner)."""

    def split(state, batch):
        batch = jax.tree.map(lambda leaf: jax.lax.with_sharding_constraint(leaf, PartitionSpec(data_axis)), batch)
        return step(state, batch)

    return split


def shard_population(epoch_fn, mesh: Mesh):
    """Splits the population axis over the mesh's "population" axis; the data and val are replicated.

    Manual over "population" only: a "data" axis stays with XLA's SPMD partitioner,
    which splits each member's batches over it (`make_population_epoch`'s `data_axis`).
    """
    pop, rep = PartitionSpec(AXIS), PartitionSpec()
    return jax.shard_map(epoch_fn, mesh=mesh, in_specs=(pop, pop, rep, pop, rep),
                         out_specs=pop, axis_names={AXIS}, check_vma=False)


def pad_members(members: list, multiple: int) -> list:
    """Repeats the last member so the population splits evenly over the "population" axis (dropped later)."""
    return members + [members[-1]] * (-len(members) % multiple)
