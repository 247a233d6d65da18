"""Shared fakes for the records tests: per-epoch logs shaped like fit's, and a fake fit loop.

Exposed as fixtures (tests import no helper module under --import-mode=importlib).
"""
import numpy as np
import pytest

from fdl.train.callbacks import Run


def fake_logs(epoch: int, steps_per_epoch: int = 10) -> dict:
    """One epoch's logs with the keys and types fit produces (floats, ints, numpy arrays)."""
    return {
        "epoch": epoch, "step": epoch * steps_per_epoch,
        "loss": 1.0 / epoch + 0.123456789, "accuracy": 0.5 + 0.1 * epoch,
        "precision_per_class": np.array([0.25 * epoch, 0.5], dtype=np.float32),
        "confusion_matrix": np.array([[5, epoch], [2, 7]], dtype=np.int32),
        "val_loss": 1.5 / epoch, "val_accuracy": 0.4 + 0.1 * epoch,
        "val_confusion_matrix": np.array([[3, 1], [epoch, 4]], dtype=np.int32),
        "learning_rate": 1e-3 * 0.5 ** (epoch - 1),
        "time_s": 0.01 * epoch, "steps_per_s": 1000.0 / epoch,
    }


def fake_run(epochs: int = 3, steps_per_epoch: int = 10) -> Run:
    return Run(model=None, state=None, epochs=epochs, steps_per_epoch=steps_per_epoch)


def drive(callback, epochs: int = 3, steps_per_epoch: int = 10) -> list[dict]:
    """Calls the callback's hooks as fit does; returns the logs it was given."""
    run = fake_run(epochs, steps_per_epoch)
    callback.on_train_begin(run)
    for epoch in range(1, epochs + 1):
        logs = fake_logs(epoch, steps_per_epoch)
        run.history.append(logs)
        callback.on_epoch_end(run, epoch, logs)
    callback.on_train_end(run)
    return run.history


def as_json(logs: dict) -> dict:
    """What a JSON round trip of the logs must give: arrays as nested lists, numbers unchanged."""
    return {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in logs.items()}


@pytest.fixture
def logs_for():
    return fake_logs


@pytest.fixture
def fit_loop():
    return drive


@pytest.fixture
def jsonable():
    return as_json
