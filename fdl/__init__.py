"""fdl: a functional deep-learning training library on JAX.

Layers are pairs of pure functions (`fdl.nn`); the library batches them with
`jax.vmap`, compiles training with `jax.jit`/`lax.scan`, and takes optimizers
from optax (`fdl.optim`), losses from optax (`fdl.losses`) and computes exact
metrics (`fdl.metrics`).
"""
from fdl import data, losses, metrics, nn, optim, train
from fdl.nn import batched, summary
from fdl.train import (
    NonFiniteLossError, TrainState, callbacks, evaluate, fit, init_train_state, load_checkpoint,
    make_train_epoch, make_train_step, predict, save_checkpoint,
)

__all__ = [
    "nn", "data", "losses", "metrics", "optim", "train", "callbacks", "batched", "summary", "fit",
    "evaluate", "predict", "TrainState", "init_train_state", "make_train_step", "make_train_epoch",
    "load_checkpoint", "save_checkpoint", "NonFiniteLossError",
]
