"""`RunRecorder`: the callback that fills a run directory while `fit` runs.

On train begin it makes the folders and makes metrics.jsonl and TensorBoard
hold exactly the run's history so far (a resumed run's epochs, each once:
fdl.train.callbacks.ModelCheckpoint restores it first); every epoch it appends the logs to
`metrics.jsonl` (through fdl.train's HistoryLogger) and writes them to
TensorBoard under `tensorboard/`; on train end it draws `plots/`. A missing
matplotlib or tensorboardX skips that part with one warning — recording never
stops a run.

With `background=True` (what `fdl train` uses) matplotlib is imported while the
first epoch compiles and the plots are drawn in a worker thread while the run
evaluates its splits; `close()` waits for them, so nothing is lost.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax

from fdl.records.plots import INSTALL_HINT, plot_history, require
from fdl.records.run_dir import RunDir, read_jsonl
from fdl.records.tensorboard import TensorBoardLogger
from fdl.train.callbacks import Callback, HistoryLogger, Run


__all__ = ["RunRecorder"]


class RunRecorder(Callback):
    """Records a training run into `run_dir`.

    Layout written:
      run_dir/metrics.jsonl   one JSON object per epoch: exactly the logs fit passes callbacks
      run_dir/tensorboard/    event files (`tensorboard --logdir run_dir/tensorboard`)
      run_dir/plots/*.png     learning curves drawn at the end (fdl.records.plot_history)

    Example:
      >>> run_dir = fdl.records.RunDir.create("runs", "mlp")
      >>> state, history = fdl.fit(model, train, val, epochs=2, callbacks=[fdl.records.RunRecorder(run_dir)])
      >>> [logs["epoch"] for logs in fdl.records.read_jsonl(run_dir.metrics_path)]
      [1, 2]

    Over several processes (`jax.distributed`) only process 0 writes; the others'
    recorders write nothing, so every process has the same callbacks.

    Args:
      run_dir: the run directory (a path or an fdl.records.RunDir); created if missing.
      tensorboard: write TensorBoard event files.
      plots: draw the learning curves when training ends.
      background: draw in a worker thread (see the module docstring); call `close()`.
    """

    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True, plots: bool = True,
                 background: bool = False):
        self.run_dir = RunDir(run_dir)
        self.writes = jax.process_index() == 0
        tensorboard, plots = tensorboard and self.writes, plots and self.writes
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="fdl-plots") if background else None
        self._drawing: list[Future] = []
        self.history = HistoryLogger(self.run_dir.metrics_path)
        missing = []
        self.tensorboard = None
        if tensorboard:
            try:
                self.tensorboard = TensorBoardLogger(self.run_dir.tensorboard_dir)
            except ImportError:
                missing.append(("tensorboardX", "TensorBoard logs"))
        self.plots = plots
        if plots:
            try:
                require("matplotlib")
            except ImportError:
                self.plots = False
                missing.append(("matplotlib", "plots"))
        if missing:
            packages = " and ".join(package for package, _ in missing)
            parts = " and ".join(part for _, part in missing)
            warnings.warn(f"RunRecorder: {packages} not installed — skipping {parts}; "
                          f"install with {INSTALL_HINT}", RuntimeWarning, stacklevel=2)
        self.plot_paths: list[Path] = []

    @property
    def metrics_path(self) -> Path:
        return self.run_dir.metrics_path

    def on_train_begin(self, run: Run) -> None:
        # The run directory holds exactly the run's history so far: nothing for a new
        # run, a resumed run's epochs once each (what a kill wrote after its checkpoint goes).
        if not self.writes:
            return
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        self.run_dir.rewrite_metrics(run.history)
        self.history.on_train_begin(run)
        if self.tensorboard is not None:
            self.tensorboard.rewrite(run.history)
        if self.plots:
            self.run_dir.plots_dir.mkdir(exist_ok=True)
            if self._worker is not None:  # the import overlaps the first compile
                self._worker.submit(require, "matplotlib.backends.backend_agg")

    def on_epoch_end(self, run: Run, epoch: int, logs: dict) -> None:
        if not self.writes:
            return
        self.history.on_epoch_end(run, epoch, logs)
        if self.tensorboard is not None:
            self.tensorboard.on_epoch_end(run, epoch, logs)

    def on_train_end(self, run: Run) -> None:
        if self.tensorboard is not None:
            self.tensorboard.on_train_end(run)
        if self.plots:
            self.draw(self._plot_history)

    def _plot_history(self) -> None:
        self.plot_paths = plot_history(self.rows(), self.run_dir.plots_dir)

    def draw(self, plot, *args, **kwargs) -> None:
        """Runs `plot(*args, **kwargs)` now, or in the worker with `background=True`.

        A plotting error is a warning, never raised: on_train_end also runs when
        fit is failing, and a plot must not hide the run's own error or lose the run.
        """
        if self._worker is not None:
            self._drawing.append(self._worker.submit(plot, *args, **kwargs))
            return
        try:
            plot(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 — reported, never raised
            self._warn(error)

    def close(self) -> None:
        """Waits for the plots drawn in the background (a no-op without `background`)."""
        if self._worker is None:
            return
        for future in self._drawing:
            if future.exception() is not None:
                self._warn(future.exception())
        self._drawing.clear()
        self._worker.shutdown(wait=True)

    def _warn(self, error: BaseException) -> None:
        warnings.warn(f"RunRecorder: could not draw plots in {self.run_dir.plots_dir}: "
                      f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=3)

    def rows(self) -> list[dict]:
        """The epochs recorded in metrics.jsonl, the last row per epoch (a resumed run may repeat one)."""
        if not self.metrics_path.exists():
            return []
        by_epoch = {}
        for index, row in enumerate(read_jsonl(self.metrics_path)):
            by_epoch[row.get("epoch", index + 1)] = row
        return [by_epoch[epoch] for epoch in sorted(by_epoch)]
