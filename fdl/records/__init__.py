"""fdl.records: everything a run leaves on disk.

A run directory (`create_run_dir`: `runs/<name>-<YYYYmmdd-HHMMSS>/`) holds
  config.yaml      the resolved configuration (written by the caller, `write_text`)
  env.json         `environment(seed, config_text)`: versions, devices, host, git commit
  metrics.jsonl    one JSON object per epoch, written by `RunRecorder`
  tensorboard/     event files (`TensorBoardLogger`; read back with `read_scalars`)
  plots/           learning curves (`plot_history`), confusion matrix, image grids
  summary.json     `run_summary(...)`: final train/val/test metrics, epochs, steps, time

Files are written atomically (`write_json`, `write_text`). Imports fdl.train's
callbacks, numpy and json; matplotlib and tensorboardX are imported only when
used (`pip install "fdl[records]"`). Never imports fdl.config or fdl.cli.

Example:
  >>> run_dir = fdl.records.create_run_dir("runs", "mlp")
  >>> fdl.records.write_json(run_dir / "env.json", fdl.records.environment(seed=0))
  >>> state, history = fdl.fit(model, train, val, callbacks=[fdl.records.RunRecorder(run_dir)])
"""
from fdl.records.env import config_sha256, environment, git_info, package_version
from fdl.records.plots import (
    history_series,
    image_grid,
    plot_confusion_matrix,
    plot_history,
    plot_images,
)
from fdl.records.recorder import RunRecorder
from fdl.records.run_dir import (
    CONFIG_FILE,
    ENV_FILE,
    METRICS_FILE,
    PLOTS_DIR,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    append_jsonl,
    create_run_dir,
    read_jsonl,
    to_json_value,
    write_bytes,
    write_json,
    write_text,
)
from fdl.records.summary import plain_value, run_summary
from fdl.records.tensorboard import TensorBoardLogger, read_records, read_scalars, scalar_tag

__all__ = [
    "CONFIG_FILE",
    "ENV_FILE",
    "METRICS_FILE",
    "PLOTS_DIR",
    "SUMMARY_FILE",
    "TENSORBOARD_DIR",
    "RunRecorder",
    "TensorBoardLogger",
    "append_jsonl",
    "config_sha256",
    "create_run_dir",
    "environment",
    "git_info",
    "history_series",
    "image_grid",
    "package_version",
    "plain_value",
    "plot_confusion_matrix",
    "plot_history",
    "plot_images",
    "read_jsonl",
    "read_records",
    "read_scalars",
    "run_summary",
    "scalar_tag",
    "to_json_value",
    "write_bytes",
    "write_json",
    "write_text",
]
