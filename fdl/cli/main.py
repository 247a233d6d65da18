"""The `fdl` command: parse, load the config, call the library.

    fdl train configs/mnist1d_cnn.yaml --set optimizer.learning_rate=3e-4
    fdl eval runs/mnist1d_cnn-20261125-101500 --split test
    fdl predict runs/mnist1d_cnn-20261125-101500 inputs.npy --out predictions.npy
    fdl summary configs/mnist1d_cnn.yaml
    fdl export runs/mnist1d_cnn-20261125-101500 --format stablehlo --out cnn.export
    fdl serve runs/mnist1d_cnn-20261125-101500 --port 8000
    fdl report runs/* --out report.html
    fdl explain runs/mnist1d_cnn-20261125-101500 x.npy --method integrated_gradients

Bad input exits with status 2 and one line on stderr; `--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["EXAMPLES", "build_parser", "main"]


EXAMPLES = {
    "train": "examples:\n  fdl train configs/mnist1d_cnn.yaml\n"
             "  fdl train configs/mnist1d_mlp.yaml --set optimizer.learning_rate=3e-4 --set seed=1\n"
             "  fdl train configs/mnist1d_cnn.yaml --out runs/my-cnn\n"
             "  fdl train --resume runs/my-cnn --set training.epochs=300\n"
             "  fdl train configs/mnist1d_cnn.yaml --out runs/my-cnn --resume auto   # the same command after any kill\n"
             "  fdl train configs/mnist1d_mlp.yaml --out /shared/mlp --coordinator 10.0.0.1:1234 --num-processes 2 "
             "--process-id 0   # and --process-id 1 on the other host\n"
             "SIGINT/SIGTERM: the epoch finishes, a checkpoint is written, exit status 128 + the signal\n"
             "(130, 143); a second signal exits at once.",
    "eval": "examples:\n  fdl eval runs/mnist1d_cnn-20261125-101500\n"
            "  fdl eval runs/mnist1d_cnn-20261125-101500 --split val --checkpoint last",
    "predict": "examples:\n  fdl predict runs/mnist1d_cnn-20261125-101500 x.npy --out predictions.npy",
    "summary": "examples:\n  fdl summary configs/mnist1d_cnn.yaml",
    "export": "examples:\n  fdl export runs/mnist1d_cnn-20261125-101500 --format stablehlo --out cnn.export\n"
              "  fdl export runs/mnist1d_cnn-20261125-101500 --format onnx --batch 1 --out cnn-onnx\n"
              "An export is a folder: model.jaxexport (or model.onnx) and metadata.json; it runs with jax\n"
              "(or onnxruntime) alone, the run's preprocessing folded in.",
    "serve": "examples:\n  fdl serve runs/mnist1d_cnn-20261125-101500 --port 8000\n"
             "  fdl serve cnn.export --host 0.0.0.0 --port 8080 --max-batch 128\n"
             "  curl -s localhost:8000/predict -H 'content-type: application/x-npy' --data-binary @x.npy\n"
             "  curl -s localhost:8000/predict -H 'content-type: application/json' "
             "-d '{\"inputs\": [[...40 numbers...]]}'\n"
             "  curl -s localhost:8000/metadata",
    "report": "examples:\n  fdl report runs/* --out report.html\n"
              "  fdl report runs/mnist1d_mlp-sweep-20261125-101500 runs/my-cnn",
    "explain": "examples:\n  fdl explain runs/mnist1d_cnn-20261125-101500 x.npy\n"
               "  fdl explain runs/mnist1d_cnn-20261125-101500 x.npy --method integrated_gradients --steps 128 "
               "--out attributions\n"
               "  fdl explain runs/mnist1d_cnn-20261125-101500 x.npy --method smoothgrad --samples 50 --noise 0.15 "
               "--target 3\n"
               "writes attributions.npy (n, *input_shape) and attributions.png (the first 16 inputs)",
    "sweep": "examples:\n  fdl sweep configs/mnist1d_mlp_sweep.yaml\n"
             "  fdl sweep configs/mnist1d_cnn_sweep.yaml --out runs/cnn-sweep --workers 2\n"
             "  fdl sweep configs/mnist1d_cnn_sweep.yaml --storage postgresql+psycopg2://user@dbhost/fdl "
             "--study cnn   # on every machine\n"
             "  fdl sweep configs/mnist1d_cnn_sweep.yaml --storage journal:///shared/cnn.log --study cnn\n"
             "  fdl sweep configs/mnist1d_mlp_sweep.yaml --set sweep.seeds=4 --set training.epochs=50\n"
             "  fdl sweep --resume runs/mnist1d_mlp_sweep-sweep-20261125-101500",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fdl", description="fdl: functional deep learning on JAX — train, evaluate and "
                                "predict from YAML configs.",
        epilog="Run `fdl COMMAND --help` for a command's options and examples.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
        return sub

    train = command("train", "train a model from a config and write its run directory")
    train.add_argument("config", nargs="?", help="YAML config file (omit with --resume)")
    train.add_argument("--resume", metavar="RUN_DIR|auto",
                       help="continue a run from its newest good checkpoint, exactly (e.g. with --set "
                            "training.epochs=300); `auto` with CONFIG and --out: continue --out if it holds "
                            "a run, else start it")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. optimizer.learning_rate=3e-4 (repeatable)")
    train.add_argument("--out", help="run directory (default runs/<config name>-<timestamp>)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--devices", metavar="N|all", help="train data-parallel on N local devices (or all): "
                       "sets training.devices")
    hosts = train.add_argument_group("many hosts (jax.distributed; every process runs the same command, "
                                     "with --out on a filesystem all of them see)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT|auto",
                       help="process 0's address; `auto`: read it from the cluster (SLURM, Open MPI, TPU)")
    hosts.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    hosts.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0 .. N-1")
    hosts.add_argument("--timeout", type=float, default=120.0, metavar="S",
                       help="seconds to wait for the coordinator, and for another process's heartbeat before "
                            "this one stops (default 120)")

    evaluate = command("eval", "evaluate a finished run's checkpoint on a split")
    evaluate.add_argument("run_dir", help="a run directory written by `fdl train`")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--checkpoint", default="best", choices=["best", "last"])

    predict = command("predict", "predict the outputs of a finished run for inputs in a .npy file")
    predict.add_argument("run_dir", help="a run directory written by `fdl train`")
    predict.add_argument("inputs", help=".npy file of shape (n, *input_shape)")
    predict.add_argument("--out", help="where to write the predictions (.npy); default prints a summary")
    predict.add_argument("--checkpoint", default="best", choices=["best", "last"])

    summary = command("summary", "print the model table of a config")
    summary.add_argument("config", help="YAML config file")
    summary.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    export = command("export", "export a finished run's model as StableHLO (jax.export) or ONNX, inference mode, "
                               "preprocessing folded in")
    export.add_argument("run_dir", help="a run directory written by `fdl train`")
    export.add_argument("--format", default="stablehlo", choices=["stablehlo", "onnx"])
    export.add_argument("--batch", default="dynamic", metavar="dynamic|N",
                        help="the batch dimension: symbolic (default) or a fixed size N")
    export.add_argument("--out", help="the export folder (default: RUN_DIR/export/<format>)")
    export.add_argument("--checkpoint", default="best", choices=["best", "last"])

    serve = command("serve", "serve a run's (or an export's) predictions over HTTP: POST /predict, GET /health, "
                             "GET /metadata; concurrent requests share compiled calls")
    serve.add_argument("model", metavar="RUN_DIR_OR_EXPORT", help="a run directory, an `fdl export` folder or an `fdl.save` folder")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--checkpoint", default="best", choices=["best", "last"])
    serve.add_argument("--max-batch", type=int, default=64, metavar="N",
                       help="the most examples in one compiled call; concurrent requests share it "
                            "(1: no batching; default 64)")
    serve.add_argument("--batch-window-ms", type=float, default=3.0, metavar="MS",
                       help="how long a request waits for others to share its call (default 3)")
    serve.add_argument("--max-request-bytes", type=int, default=8 << 20, metavar="BYTES",
                       help="the largest /predict body accepted, 413 beyond (default 8 MiB)")

    report = command("report", "one self-contained HTML page comparing runs and sweeps")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep directories")
    report.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")

    explain = command("explain", "attributions of a run's predictions for inputs in a .npy file, as .npy and plots")
    explain.add_argument("run_dir", help="a run directory written by `fdl train`")
    explain.add_argument("inputs", help=".npy file of shape (n, *input_shape)")
    explain.add_argument("--method", default="saliency", choices=["saliency", "integrated_gradients", "smoothgrad"])
    explain.add_argument("--out", help="folder for attributions.npy and the plots (default: RUN_DIR/explain)")
    explain.add_argument("--checkpoint", default="best", choices=["best", "last"])
    explain.add_argument("--target", type=int, help="the class to explain for every input (default: each "
                                                    "input's predicted class)")
    explain.add_argument("--baseline", type=float, help="integrated_gradients: the constant input the path "
                                                        "starts from, in raw units (default 0)")
    explain.add_argument("--steps", type=int, help="integrated_gradients: gradients along the path (default 64)")
    explain.add_argument("--samples", type=int, help="smoothgrad: noisy copies per input (default 50)")
    explain.add_argument("--noise", type=float, help="smoothgrad: noise std as a fraction of each input's "
                                                     "range (default 0.15)")
    explain.add_argument("--seed", type=int, help="smoothgrad: the noise's random seed (default 0)")

    sweep = command("sweep", "train the populations a config's sweep: section asks for; results, best.yaml, plots")
    sweep.add_argument("config", nargs="?", help="YAML config with a sweep: section (omit with --resume)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sweep.add_argument("--out", help="sweep directory (default runs/<config name>-sweep-<timestamp>)")
    sweep.add_argument("--storage", help="Optuna storage URL shared by workers (default: study.db in the "
                                         "sweep directory), e.g. postgresql+psycopg2://user@host/db")
    sweep.add_argument("--study", help="study name (default: the config's name); workers join by name")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    sweep.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR; finished trials are kept")
    sweep.add_argument("--worker", action="store_true", help="train trials only, write no results "
                                                             "(what --workers starts)")
    sweep.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from fdl.cli import commands  # the library loads only when a command runs, so --help is instant
    try:
        return getattr(commands, f"run_{args.command}")(args)
    except KeyboardInterrupt as interrupt:
        from fdl.train import TrainingInterrupted

        if isinstance(interrupt, TrainingInterrupted):
            where = getattr(interrupt, "run_dir", None)
            print(f"fdl {args.command}: {interrupt}; checkpoint written — continue with `fdl train --resume "
                  f"{where or 'RUN_DIR'}`", file=sys.stderr)
            return interrupt.exit_status
        print("fdl: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"fdl {args.command}: error: {commands.one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
