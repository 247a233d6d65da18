"""fdl.train: the training engine (imports nn, losses, metrics, optim, data; never config or cli).

Pieces a researcher can compose: `TrainState`/`init_train_state`,
`make_train_step` (one step), `make_train_epoch` (a fused epoch),
`evaluate_arrays`/`predict_arrays`, callbacks and checkpoints; `fit`,
`evaluate` and `predict` put them together.
"""
from fdl.train import callbacks
from fdl.train.checkpoint import load_checkpoint, save_checkpoint
from fdl.train.epoch import (
    host_batches, make_host_epoch, make_replay_epoch, make_step_epoch, make_train_epoch,
)
from fdl.train.evaluate import evaluate_arrays, predict_arrays
from fdl.train.fit import History, NonFiniteLossError, evaluate, fit, predict
from fdl.train.state import TrainState, init_train_state
from fdl.train.step import guard, make_loss_fn, make_train_step, per_example_grads

__all__ = [
    "callbacks", "load_checkpoint", "save_checkpoint", "host_batches", "make_train_epoch",
    "make_host_epoch", "make_replay_epoch", "evaluate_arrays", "predict_arrays", "History", "NonFiniteLossError",
    "evaluate", "fit", "make_step_epoch", "predict", "TrainState", "init_train_state", "guard",
    "make_loss_fn", "make_train_step", "per_example_grads",
]
