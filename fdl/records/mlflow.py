"""`MLflowLogger`: a run's parameters, per-epoch metrics and summary in MLflow, for users who run MLflow.

MLflow (`pip install "fdl[mlflow]"`, mlflow-skinny) is imported when a logger
is made, never by `import fdl`. The logger talks to the tracking store through
`mlflow.tracking.MlflowClient` only (no `mlflow.start_run`: no process-global
active run), so two loggers in one process never mix their runs.

What one fit becomes in MLflow: one run of the experiment; its params are the
flattened config (dotted keys) or whatever `params` was given, else the fit's
epochs and steps per epoch; every epoch's scalar logs are metrics under their
log names ("loss", "val_accuracy", "learning_rate", ...) with step = the epoch;
`log_summary` adds the final numbers (summary.json's layout) as
"summary.<split>.<metric>" metrics. A resumed run's earlier epochs are logged
when training begins, so its MLflow run holds every epoch once.

MLflow 3 refuses the plain-folder (`file:`) store unless MLFLOW_ALLOW_FILE_STORE=true;
`sqlite:///mlflow.db` (needs sqlalchemy) or an `http://` tracking server are its backends.
"""
from __future__ import annotations

import json
import time
from typing import Any, Mapping

import jax

from fdl.io import to_python
from fdl.records.plots import as_scalar
from fdl.records.report import flatten
from fdl.train.callbacks import Callback, Run

__all__ = ["MLflowLogger", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "fdl[mlflow]"'
_SKIPPED = ("epoch", "step")  # the x axis, not metrics
_BATCH = 100  # MLflow's limit of params per log_batch call


def _require_mlflow():
    try:
        import mlflow
    except ImportError:
        raise ImportError(f"MLflowLogger needs mlflow — {INSTALL_HINT}") from None
    return mlflow


class MLflowLogger(Callback):
    """Logs a fit to MLflow: params at the start, metrics every epoch (step = epoch), the status at the end.

    Example:
      >>> from mlflow.tracking import MlflowClient
      >>> logger = MLflowLogger("sqlite:///mlflow.db", experiment="mnist1d", run_name="mlp",
      ...                       params={"optimizer": {"name": "adam", "learning_rate": 1e-3}})
      >>> state, history = fdl.fit(model, train, val, epochs=2, callbacks=[logger], verbose=0)
      >>> logger.log_summary({"test": fdl.evaluate(model, state, test)})
      >>> client = MlflowClient("sqlite:///mlflow.db")
      >>> [(m.step, m.value) for m in client.get_metric_history(logger.run_id, "val_loss")] == [
      ...     (logs["epoch"], logs["val_loss"]) for logs in history]
      True
      >>> client.get_run(logger.run_id).data.params
      {'optimizer.name': 'adam', 'optimizer.learning_rate': '0.001'}

      or in a config: `output: {mlflow: {tracking_uri: sqlite:///mlflow.db}}`; then
      `mlflow ui --backend-store-uri sqlite:///mlflow.db` shows the runs.

    Args:
      tracking_uri: the MLflow tracking store, e.g. "sqlite:///mlflow.db" or "http://host:5000";
        None: MLflow's default (the MLFLOW_TRACKING_URI environment variable, else its own).
      experiment: the experiment's name, created if missing; None: MLflow's "Default".
      run_name: the MLflow run's name; None: MLflow picks one.
      params: the run's parameters, nested mappings flattened to dotted keys; None: the fit's
        epochs and steps_per_epoch.
      tags: MLflow tags of the run (str values).

    Over several processes (`jax.distributed`) only process 0 logs.

    Raises:
      ImportError: mlflow is not installed (at construction, before training).
      ValueError: the tracking store refuses the URI or the experiment (naming them, with MLflow's reason).
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None,
                 run_name: str | None = None, *, params: Mapping | None = None, tags: Mapping | None = None):
        _require_mlflow()
        self.tracking_uri, self.run_name = tracking_uri, run_name
        self.writes = jax.process_index() == 0  # over several processes, process 0 logs the run
        self.client, self.experiment_id = self._connect(experiment) if self.writes else (None, None)
        self.params = None if params is None else flatten(to_python(params))
        self.tags = {str(key): str(value) for key, value in (tags or {}).items()}
        self.run_id: str | None = None

    def _connect(self, experiment: str | None):
        """(client, experiment id): the experiment found or created in the tracking store."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(self.tracking_uri)
            found = client.get_experiment_by_name(experiment or "Default")
            return client, found.experiment_id if found is not None else client.create_experiment(experiment)
        except MlflowException as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"MLflowLogger: tracking_uri {self.tracking_uri!r}, experiment {experiment!r}: "
                             f"{reason}") from None

    def on_train_begin(self, run: Run) -> None:
        if not self.writes:
            return
        if self.run_id is None:
            created = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=self.tags)
            self.run_id = created.info.run_id
            params = self.params if self.params is not None else \
                {"epochs": run.epochs, "steps_per_epoch": run.steps_per_epoch}
            self._log_params(params)
        for index, logs in enumerate(run.history):  # a resumed run's epochs so far
            self._log_metrics(logs, logs.get("epoch", index + 1))

    def on_epoch_end(self, run: Run, epoch: int, logs: dict) -> None:
        if self.writes:
            self._log_metrics(logs, epoch)

    def on_train_end(self, run: Run) -> None:
        """Marks the MLflow run FINISHED when every epoch ran or a callback stopped it, else FAILED
        (fit calls this also when an error ends training)."""
        if self.run_id is not None:
            finished = run.epoch >= run.epochs or run.stop_training
            self.client.set_terminated(self.run_id, "FINISHED" if finished else "FAILED")

    def log_summary(self, summary: Mapping) -> None:
        """Logs a run's final numbers (summary.json's layout: {split: {metric: value}, "epochs": n, ...}) as
        metrics "summary.<split>.<metric>" and "summary.<key>", at the step of the last epoch logged."""
        if not self.writes:
            return
        summary = to_python(summary)
        flat = flatten(summary)  # non-numbers (per-class lists, an error message) are left out below
        self._log_metrics({f"summary.{key}": value for key, value in flat.items()}, int(summary.get("epochs", 0)))

    def _log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, value if isinstance(value, str) else json.dumps(value)) for key, value in params.items()]
        for start in range(0, len(entries), _BATCH):
            self.client.log_batch(self.run_id, params=entries[start:start + _BATCH])

    def _log_metrics(self, logs: Mapping, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, number, now, int(step)) for key, value in logs.items()
                   if key not in _SKIPPED and (number := as_scalar(value)) is not None]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
