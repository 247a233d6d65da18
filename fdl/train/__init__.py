"""fdl.train: the training engine (imports nn, losses, metrics, optim, data; never config or cli).

Pieces a researcher can compose: `TrainState`/`init_train_state`,
`make_train_step` (one step), `make_train_epoch` (a fused epoch), `Evaluator`
(compiled evaluation and prediction), callbacks and checkpoints; `fit`,
`evaluate` and `predict` put them together. The epoch drivers for the host and
per-step paths, the NaN guard and the placement logic are internals of `fit`
(import them from their modules when building an engine of your own).
"""
from fdl.train import callbacks
from fdl.train.checkpoint import CheckpointError, RunCheckpoints, load_checkpoint, save_checkpoint
from fdl.train.epoch import make_train_epoch
from fdl.train.evaluate import Evaluator
from fdl.train.fit import History, NonFiniteLossError, evaluate, fit, predict
from fdl.train.interrupt import TrainingInterrupted
from fdl.train.state import TrainState, init_train_state
from fdl.train.step import make_loss_fn, make_train_step, per_example_grads

__all__ = [
    "callbacks", "CheckpointError", "RunCheckpoints", "load_checkpoint", "save_checkpoint", "TrainingInterrupted", "make_train_epoch", "Evaluator", "History",
    "NonFiniteLossError", "evaluate", "fit", "predict", "TrainState", "init_train_state",
    "make_loss_fn", "make_train_step", "per_example_grads",
]
