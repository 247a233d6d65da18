"""What the program scripts of experiments/ share: their command line, overrides and run/print scaffolding.

Not a program itself. The scripts import it as `from program import ...`: Python
puts a script's own folder (experiments/) on sys.path when it runs
`python experiments/<script>.py`.

    --mnist DIR       the MNIST IDX files instead of the built-in MNIST-1D (mnist=True)
    --out DIR         the run directory, `output.dir` (out=... not None)
    --set KEY=VALUE   a config override, repeatable
    --smoke           seconds, not minutes: SMOKE_OVERRIDES (1 epoch on 200 examples, quiet, no
                      TensorBoard or plots), before the --set ones
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from fdl.config import load_config
from fdl.runs import train_from_config
from fdl.runs import RunResult

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BUILT_IN = "MNIST-1D (built in; pass --mnist DIR for MNIST)"
OUT_HELP = "run directory (default runs/<name>-<time>)"
SET_HELP = "config override, repeatable, e.g. --set training.epochs=5"
# The `fdl` command of this interpreter's environment, else whichever is on PATH.
FDL = str(Path(sys.executable).with_name("fdl")) if Path(sys.executable).with_name("fdl").exists() else "fdl"
SMOKE_OVERRIDES = ("training.epochs=1", "data.limit_train=200", "training.verbose=0",
                   "output.tensorboard=false", "output.plots=false")


def parse_args(description: str, argv: Sequence[str] | None = None, mnist: bool = True, *,
               out: str | None = OUT_HELP, set_help: str = SET_HELP,
               options: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """`--mnist DIR` (when `mnist`), the script's own `options(parser)`, `--out DIR` (help `out`; none
    when None), `--set KEY=VALUE` into `args.overrides`, then `--smoke`."""
    parser = argparse.ArgumentParser(description=description)
    if mnist:
        parser.add_argument("--mnist", metavar="DIR", help="folder with the MNIST IDX files "
                            "(default: the built-in MNIST-1D)")
    if options is not None:
        options(parser)
    if out is not None:
        parser.add_argument("--out", metavar="DIR", help=out)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=set_help)
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds: " + " ".join(SMOKE_OVERRIDES) + " (before the --set ones)")
    return parser.parse_args(argv)


def config_overrides(args: argparse.Namespace, extra: Iterable[str] = (), *,
                     out: str | Path | None = None) -> list[str]:
    """The overrides the command line asks for: with --mnist, MNIST data and then `extra` (what the
    config needs changed for MNIST); `output.dir` (`out`, else --out); SMOKE_OVERRIDES with
    --smoke; last the --set ones."""
    mnist = getattr(args, "mnist", None)
    data = ["data.name=mnist", f"data.path={mnist}", *extra] if mnist else []
    out = out if out is not None else getattr(args, "out", None)
    smoke = list(SMOKE_OVERRIDES) if getattr(args, "smoke", False) else []
    return data + ([f"output.dir={out}"] if out else []) + smoke + list(args.overrides)


def data_description(args: argparse.Namespace) -> str:
    """'MNIST' with --mnist, else the built-in MNIST-1D and a pointer to --mnist."""
    return "MNIST" if getattr(args, "mnist", None) else BUILT_IN


def listed_scores(config, test: dict) -> str:
    """'test <metric> <value>, ..., loss <value>' over the config's metrics."""
    scores = ", ".join(f"{name} {test[name]:.4f}" for name in config.metrics)
    return f"test {scores}, loss {test['loss']:.4f}"


def accuracy_scores(config, test: dict) -> str:
    """'test accuracy <value>, test loss <value>'."""
    return f"test accuracy {test['accuracy']:.4f}, test loss {test['loss']:.4f}"


def run_config(config_path: str | Path, overrides: Sequence[str], label: str,
               header: str | Callable[..., str] = "",
               scores: Callable[..., str] = listed_scores) -> RunResult:
    """Load `config_path` with `overrides`, print '<label>: <header>' (`header(config)` if callable),
    train it with `train_from_config`, print the run directory and then
    '<label> [<data>]: <scores(config, test)>, <seconds> s'; return the RunResult."""
    config = load_config(config_path, list(overrides))
    print(f"{label}: {header(config) if callable(header) else header}")
    start = time.perf_counter()
    result = train_from_config(config)
    print(f"run directory: {result.run_dir.path}")
    print(f"{label} [{config.data.name}]: {scores(config, result.summary['test'])}, "
          f"{time.perf_counter() - start:.1f} s")
    return result
