"""What each `fdl` subcommand does, given its parsed arguments: short calls into fdl.runs."""
from __future__ import annotations

import io
import json
import os

import numpy as np

from fdl.config import ConfigError, build_arguments, load_config
from fdl.io import to_python
from fdl.nn import summary
from fdl.records import RunDir, write_bytes
from fdl.records.run_dir import RunDirLockedError
from fdl.runs import load_run, resume_run, train_from_config
from fdl.runs.explain import explain_to_folder

__all__ = ["one_line", "run_train", "run_eval", "run_predict", "run_export", "run_explain", "run_summary", "run_serve",
           "run_sweep", "run_report"]


def one_line(error: BaseException) -> str:
    """The first line of `error`'s message; prefixed with its type unless it is an input or file error."""
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    return message if isinstance(error, (ValueError, OSError, KeyError, TypeError, RunDirLockedError)) else \
        f"{type(error).__name__}: {message}"


def _join_processes(args) -> list[str]:
    """Joins the jax.distributed job of --coordinator (before any JAX work); the overrides it implies."""
    if args.coordinator is None:
        if args.num_processes is not None or args.process_id is not None:
            raise ConfigError("--num-processes and --process-id need --coordinator HOST:PORT (process 0's address)")
        return []
    from fdl.train.distributed import initialize

    if args.coordinator != "auto" and (args.num_processes is None or args.process_id is None):
        raise ConfigError(f"--coordinator {args.coordinator}: give --num-processes N and --process-id I too "
                          "(or --coordinator auto inside a SLURM, Open MPI or TPU job)")
    if args.devices not in (None, "all"):
        raise ConfigError(f"--devices {args.devices}: with --coordinator the run spans every device of every "
                          "process — drop --devices")
    initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=args.timeout)
    return ["training.devices=all"]  # one mesh over every process's devices


def run_train(args) -> int:
    overrides = list(args.overrides) + (["training.verbose=0"] if args.quiet else []) + (
        [f"training.devices={args.devices}"] if args.devices and not args.coordinator else []) + _join_processes(args)
    if args.resume == "auto":
        if not (args.config and args.out):
            raise ConfigError("--resume auto needs CONFIG and --out: it continues the run in --out if there "
                              "is one, else starts it there")
        config = load_config(args.config, overrides + [f"output.dir={args.out}"])
        started = RunDir(args.out).config_path.is_file()
        result = train_from_config(config, resume=args.out if started else None)
    elif args.resume:
        if args.config or args.out:
            raise ConfigError("--resume RUN_DIR continues that run with its own config.yaml — "
                              "drop CONFIG and --out (change settings with --set), or use --resume auto")
        result = resume_run(args.resume, overrides)
    elif args.config:
        overrides += [f"output.dir={args.out}"] if args.out else []
        result = train_from_config(load_config(args.config, overrides))
    else:
        raise ConfigError("fdl train needs a CONFIG file, or --resume RUN_DIR")
    summary = result.summary
    print(f"run directory: {result.run_dir.path}")
    if "first_step_s" in summary:
        print(f"first step after {summary['first_step_s']:.2f} s (compiling {summary['compile_s']:.2f} s); "
              f"{summary['steps_per_s']:,.0f} steps/s")
    print(json.dumps({k: v for k, v in summary.items() if k in ("train", "val", "test")}))
    return 0


def run_eval(args) -> int:
    run = load_run(args.run_dir, args.checkpoint)
    try:
        scores = run.evaluate(args.split)
    except ValueError as error:
        raise ConfigError(f"--split {args.split}: {error}") from None
    run.run_dir.write_eval(args.split, scores)
    print(json.dumps({args.split: to_python(scores)}))
    return 0


def _load_inputs(path: str, run):
    """The inputs in the file at `path`, checked as inputs of `run`'s model; errors name the file.

    A .npy array for a model that takes one array; an .npz with one array per input
    key for a model that takes a dict of inputs (`np.savez(path, a=xa, b=xb)`).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"inputs file {path!r} does not exist")
    input_shape = run.arguments.data.dataset.feature_shape
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as error:
        kind = "an .npz archive" if isinstance(input_shape, dict) else "a .npy array"
        raise ValueError(f"inputs file {path!r} is not {kind} ({error})") from None
    if isinstance(input_shape, dict):
        x = _input_arrays(path, x, list(input_shape))
    try:
        return run.check_inputs(x)
    except ValueError as error:
        raise ValueError(f"inputs file {path!r}: {error}") from None


def _input_arrays(path: str, loaded, names: list[str]) -> dict[str, np.ndarray]:
    """{input: array} of an .npz file opened by np.load, holding exactly the arrays `names`."""
    fix = f"save one array per input: np.savez({os.path.basename(path)!r}, {', '.join(f'{n}=...' for n in names)})"
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"inputs file {path!r} is one array, the run's model takes a dict of inputs {names} — "
                         f"pass an .npz with keys {names}: {fix}")
    with loaded:
        missing = [name for name in names if name not in loaded.files]
        extra = [name for name in loaded.files if name not in names]
        if missing or extra:
            problem = f"has no array {missing[0]!r}" if missing else f"holds {extra[0]!r}, not an input"
            raise ValueError(f"inputs file {path!r} {problem} — the run's model takes inputs {names}; {fix}")
        return {name: loaded[name] for name in names}


def run_predict(args) -> int:
    run = load_run(args.run_dir, args.checkpoint)
    outputs = run.predict(_load_inputs(args.inputs, run))  # errors of the run's own files name those
    if args.out:
        buffer = io.BytesIO()
        np.save(buffer, outputs)
        write_bytes(args.out, buffer.getvalue())
        print(f"predictions {outputs.shape} written to {args.out}")
    else:
        print(json.dumps({"shape": list(outputs.shape), "argmax": to_python(np.argmax(outputs, -1)[:20])}))
    return 0


def run_export(args) -> int:
    from fdl.runs.export import FILES, default_out, export

    run = load_run(args.run_dir, args.checkpoint)
    folder = export(run, format=args.format, batch=args.batch, out=args.out or default_out(args.run_dir, args.format))
    print(f"{args.format} export (batch {args.batch}, {run.checkpoint} checkpoint) written to {folder}: "
          f"{FILES[args.format]} and metadata.json")
    return 0


def run_explain(args) -> int:
    """Writes a run's attributions for the inputs of a .npy file: attributions.npy and a plot."""
    run = load_run(args.run_dir, args.checkpoint)
    run.require_one_input("fdl explain")
    written = explain_to_folder(run, _load_inputs(args.inputs, run), args.out, method=args.method,
                                target=args.target, baseline=args.baseline, steps=args.steps,
                                samples=args.samples, noise=args.noise, seed=args.seed)
    print(written.describe())
    return 0


def run_summary(args) -> int:
    arguments = build_arguments(load_config(args.config, args.overrides))
    print(summary(arguments.model, arguments.data.dataset.feature_shape))
    return 0


def run_serve(args) -> int:
    """Serves a run's predictions over HTTP until interrupted (needs the serve extra)."""
    from fdl.runs.serve import serve  # loads fastapi and uvicorn only for this command

    serve(args.model, host=args.host, port=args.port, checkpoint=args.checkpoint, max_batch=args.max_batch,
          batch_window_ms=args.batch_window_ms, max_request_bytes=args.max_request_bytes)
    return 0


def run_sweep(args) -> int:
    """Runs `fdl sweep CONFIG` / joins a shared study / resumes a sweep directory; 0 when done."""
    try:
        from fdl.runs.sweep import driver
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"fdl sweep needs {error.name} — install it with "
                                  "pip install \"fdl[sweep]\"") from None
    result = driver.run_sweep(
        args.config, out_dir=args.out, storage=args.storage, study_name=args.study,
        workers=args.workers, resume=args.resume, overrides=args.overrides,
        report=not args.worker, verbose=0 if args.quiet else 1)
    if args.worker:
        print(f"worker done: trained {result.trained} trials of study {result.study_name!r}")
    else:
        print(f"sweep directory: {result.sweep_dir.path}  (results.csv, best.yaml, plots/)")
    return 0


def run_report(args) -> int:
    """`fdl report RUN_DIR... --out report.html`: one HTML page comparing the runs and sweeps."""
    from fdl.runs.report import write_report

    print(f"report written to {write_report(args.runs, args.out)}")
    return 0
