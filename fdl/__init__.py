"""fdl: a functional deep-learning training library on JAX.

Layers are pairs of pure functions (`fdl.nn`); the library batches them with
`jax.vmap`, compiles training with `jax.jit`/`lax.scan`, and takes optimizers
from optax (`fdl.optim`), losses from optax (`fdl.losses`) and computes exact
metrics (`fdl.metrics`).
"""
from fdl import data, losses, metrics, nn, objectives, optim, train
from fdl.nn import batched, summary
from fdl.train import (
    NonFiniteLossError, TrainState, callbacks, evaluate, fit, init_train_state, load_checkpoint,
    make_train_epoch, make_train_step, predict, save_checkpoint,
)

# The upper floors (configs, run directories, populations, sweeps) load on first use, so
# `import fdl` stays the layers and the engine.
_LAZY = {"load_run": "fdl.runs", "LoadedRun": "fdl.runs", "config": "fdl.config", "runs": "fdl.runs",
         "records": "fdl.records", "population": "fdl.population", "export": "fdl.runs.export",
         "save": "fdl.runs.saved", "load": "fdl.runs.saved", "explain": "fdl.runs.explain",
         "attribution": "fdl.attribution"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(_LAZY[name])
        return module if module.__name__ == f"fdl.{name}" else getattr(module, name)
    raise AttributeError(f"module 'fdl' has no attribute {name!r}")


__all__ = [
    "nn", "data", "losses", "metrics", "objectives", "optim", "train", "callbacks", "batched", "summary", "fit",
    "evaluate", "predict", "TrainState", "init_train_state", "make_train_step", "make_train_epoch",
    "load_checkpoint", "save_checkpoint", "NonFiniteLossError", *_LAZY,
]
