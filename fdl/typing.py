"""Type aliases shared across fdl.

Shapes are always *per example*: the batch axis is added by the library
(`fdl.batched`), never by a layer.
"""
from typing import Any

import jax

__all__ = ["PRNGKey", "Shape", "Params", "State"]

PRNGKey = jax.Array
Shape = tuple[int, ...]
Params = Any  # a pytree (nested dict) of arrays, only these reach the optimizer
State = Any   # a pytree (nested dict) of non-trainable arrays, e.g. BatchNorm statistics
