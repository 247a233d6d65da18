"""Stopping `fit` cleanly on SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption).

The first signal lets the current epoch finish — or, when callbacks act
mid-epoch (`ModelCheckpoint(every_steps=N)`), the current chunk of N steps;
fit then runs every
callback's end — `ModelCheckpoint` writes the checkpoint to resume from — and
raises `TrainingInterrupted`. A second signal acts at once, as it would
without fdl (KeyboardInterrupt for SIGINT, termination for SIGTERM).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

__all__ = ["TrainingInterrupted", "graceful_interrupts"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """fit stopped on a signal after a whole epoch or chunk, its callbacks ended (checkpoints written).

    Attributes: signal_number; epoch (epochs completed); done (steps taken of
    the next epoch, 0 after a whole epoch); state; history; exit_status, 128 +
    the signal's number (130 for SIGINT, 143 for SIGTERM), what `fdl train`
    exits with.
    """

    def __init__(self, signal_number: int, epoch: int, state, history, done: int = 0):
        self.signal_number, self.epoch, self.state, self.history = signal_number, epoch, state, history
        self.done, self.exit_status = done, 128 + signal_number
        where = f"at step {done} of epoch {epoch + 1}" if done else f"after epoch {epoch}"
        super().__init__(f"{signal.Signals(signal_number).name} received: training stopped {where}")


@contextlib.contextmanager
def graceful_interrupts() -> Iterator[Callable[[], int | None]]:
    """Within the block, the first SIGINT/SIGTERM is only recorded; yields `received() -> signal or None`.

    Outside the main thread (where Python cannot handle signals) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received: list[int] = []

    def record(signal_number, frame):
        received.append(signal_number)
        for number, handler in previous.items():  # a second signal acts at once
            signal.signal(number, handler)

    previous = {number: signal.signal(number, record) for number in SIGNALS}
    try:
        yield lambda: received[0] if received else None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
