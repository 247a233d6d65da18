"""fdl.records: everything a run leaves on disk.

A run directory (`RunDir`, which knows the name of every file in it; see its
docstring) holds the resolved config, `environment(seed, config_text)` (versions,
devices, host, git commit), one line of logs per epoch (`RunRecorder`),
TensorBoard event files (`TensorBoardLogger`; read back with `read_scalars`),
plots (`plot_history`, confusion matrix, image grids), checkpoints, the fitted
preprocessing and `run_summary(...)`; a sweep directory is a `SweepDir`.

Files are written atomically (`write_json`, `write_text`). Imports fdl.train's
callbacks, numpy and json; matplotlib and tensorboardX are imported only when
used (`pip install "fdl[records]"`). Never imports fdl.config or fdl.cli.

Example:
  >>> run_dir = fdl.records.RunDir.create("runs", "mlp")
  >>> env_path = run_dir.write_env(fdl.records.environment(seed=0))
  >>> state, history = fdl.fit(model, train, val, epochs=2, callbacks=[fdl.records.RunRecorder(run_dir)])
  >>> sorted(path.name for path in run_dir.path.iterdir())
  ['env.json', 'metrics.jsonl', 'plots', 'tensorboard']
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
    RunDir,
    RunDirLockedError,
    SweepDir,
    append_jsonl,
    create_run_dir,
    read_jsonl,
    write_bytes,
    write_json,
    write_text,
)
from fdl.records.summary import plain_value, run_summary
from fdl.records.tensorboard import TensorBoardLogger, read_records, read_scalars, scalar_tag

__all__ = [
    "RunDir",
    "RunDirLockedError",
    "RunRecorder",
    "SweepDir",
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
    "write_bytes",
    "write_json",
    "write_text",
]
