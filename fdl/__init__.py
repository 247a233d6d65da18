"""fdl: a functional deep-learning training library on JAX.

Layers are pairs of pure functions (`fdl.nn`); the library batches them with
`jax.vmap`, compiles training with `jax.jit`/`lax.scan`, and takes optimizers
from optax.
"""
from fdl import nn
from fdl.nn import batched, summary

__all__ = ["nn", "batched", "summary"]
