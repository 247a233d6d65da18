"""What each `fdl` subcommand does, given its parsed arguments."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from fdl.cli.sweep import run_sweep  # noqa: F401 — main dispatches run_<command>
from fdl.config import load_config, load_run, resume_run, train_from_config
from fdl.config.build import build_data, build_loss, build_model
from fdl.config.load import ConfigError
from fdl.config.run import check_model_fits_data
from fdl.data import MinMaxStats, StandardizeStats, transform
from fdl.nn import summary
from fdl.records import write_bytes, write_json
from fdl.train import evaluate_arrays, predict_arrays
from fdl.train.fit import as_metrics, infer_num_classes, output_shape

STATS = {"standardize": StandardizeStats, "min_max": MinMaxStats}


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    return message if isinstance(error, (ValueError, OSError, KeyError, TypeError)) else \
        f"{type(error).__name__}: {message}"


def run_train(args) -> int:
    overrides = list(args.overrides) + (["training.verbose=0"] if args.quiet else [])
    if args.resume:
        if args.config or args.out:
            raise ConfigError("--resume RUN_DIR continues that run with its own config.yaml — "
                              "drop CONFIG and --out (change settings with --set)")
        result = resume_run(args.resume, overrides)
    elif args.config:
        overrides += [f"output.dir={args.out}"] if args.out else []
        result = train_from_config(load_config(args.config, overrides))
    else:
        raise ConfigError("fdl train needs a CONFIG file, or --resume RUN_DIR")
    print(f"run directory: {result.run_dir}")
    print(json.dumps({k: v for k, v in result.summary.items() if k in ("train", "val", "test")}))
    return 0


def run_eval(args) -> int:
    config, model, prepared, state = load_run(args.run_dir, args.checkpoint)
    splits = prepared.dataset.splits()
    if args.split not in splits:
        raise ConfigError(f"--split {args.split}: this run's data has no {args.split} split — "
                          f"available: {', '.join(splits)}")
    split = splits[args.split]
    num_classes = infer_num_classes(output_shape(model, prepared.dataset.feature_shape))
    scores = evaluate_arrays(model, state.params, state.model_state, split.x, split.y,
                             loss=build_loss(config.loss), metrics=as_metrics(config.metrics, num_classes),
                             batch_size=config.training.eval_batch_size)
    write_json(Path(args.run_dir) / f"eval_{args.split}.json", scores)
    print(json.dumps({args.split: scores}, default=lambda v: np.asarray(v).tolist()))
    return 0


def _load_inputs(path: str, input_shape: tuple) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"inputs file {path!r} does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"inputs file {path!r} is not a .npy array ({error})") from None
    if x.shape[1:] != tuple(input_shape):
        single = " (one example? add a leading axis: x[None])" if x.shape == tuple(input_shape) else ""
        raise ValueError(f"inputs file {path!r} has shape {x.shape}, the model expects "
                         f"(n, {', '.join(map(str, input_shape))}){single}")
    return x.astype(np.float32)


def run_predict(args) -> int:
    config, model, prepared, state = load_run(args.run_dir, args.checkpoint)
    x = _load_inputs(args.inputs, prepared.dataset.feature_shape)
    saved = Path(args.run_dir) / "preprocess.npz"
    if saved.is_file():  # the statistics fitted on the run's training split
        with np.load(saved) as stats:
            method = str(stats["method"])
            x = transform(method, STATS[method](**{k: stats[k] for k in stats.files if k != "method"}), x)
    outputs = predict_arrays(model, state.params, state.model_state, x,
                             batch_size=config.training.eval_batch_size)
    if args.out:
        buffer = io.BytesIO()
        np.save(buffer, outputs)
        write_bytes(args.out, buffer.getvalue())
        print(f"predictions {outputs.shape} written to {args.out}")
    else:
        print(json.dumps({"shape": list(outputs.shape),
                          "argmax": np.argmax(outputs, -1).tolist()[:20]}))
    return 0


def run_summary(args) -> int:
    config = load_config(args.config, args.overrides)
    prepared = build_data(config.data, config.seed)
    model = build_model(config.model)
    check_model_fits_data(model, prepared.dataset.feature_shape)
    print(summary(model, prepared.dataset.feature_shape))
    return 0
