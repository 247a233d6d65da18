"""`all_finite`: the one finiteness reduction of the engine.

The NaN guard (`fdl.train.step.guard`), the epoch drivers' checks and dynamic
loss scaling (`fdl.train.precision.dynamic_loss_scale`) all call it; it lives
apart so that precision.py, which step.py imports, can use it too.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["all_finite"]


def all_finite(tree) -> jax.Array:
    """() bool: every element of every leaf of `tree` is finite (True for a tree with no leaves)."""
    # reduce, not jnp.stack: a model without params (e.g. one Relu) has no leaves to stack.
    return functools.reduce(jnp.logical_and, (jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)),
                            jnp.asarray(True))
