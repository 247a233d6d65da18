"""End to end: `fdl sweep` over N seeds vs a shell loop of N `fdl train --set seed=i` runs.

    python experiments/benchmark_sweep.py [--seeds 32] [--config configs/mnist1d_mlp.yaml] [--set KEY=VALUE]
    python experiments/benchmark_sweep.py --smoke      # seconds: 1 seed, SMOKE_OVERRIDES

Both sides run the same config (the MNIST-1D MLP recipe by default) from the
command line, start-up, data, compile, training, evaluation and records
included. Prints the wall times, their ratio (target >= 2.5x) and each side's
test accuracy as mean ± std over the seeds. The sweep reports each member at
its best epoch by `val_accuracy`, the single runs their final state.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from program import FDL

ROOT = Path(__file__).resolve().parents[1]
SMOKE_OVERRIDES = ["training.epochs=1", "data.limit_train=200", "output.tensorboard=false",
                   "output.plots=false"]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def sweep_config(folder: Path, base: Path, seeds: int) -> Path:
    path = folder / "seeds_sweep.yaml"
    path.write_text(f"defaults: {base.resolve()}\n"
                    f"sweep:\n  method: grid\n  seeds: {seeds}\n  monitor: val_accuracy\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist1d_mlp.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both sides, repeatable")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: 1 seed, " + " ".join(SMOKE_OVERRIDES) + " (before the --set ones)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.overrides = 1, SMOKE_OVERRIDES + args.overrides
    sets = [part for override in args.overrides for part in ("--set", override)]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        sweep_seconds = timed([FDL, "sweep", str(sweep_config(folder, Path(args.config), args.seeds)),
                               *sets, "--out", str(folder / "sweep"), "--quiet"])
        with open(folder / "sweep" / "results.csv") as file:
            sweep_accuracy = [float(row["test_accuracy"]) for row in csv.DictReader(file)]
        loop_seconds, loop_accuracy = 0.0, []
        for seed in range(args.seeds):
            out = folder / f"run-{seed}"
            loop_seconds += timed([FDL, "train", args.config, *sets, "--set", f"seed={seed}",
                                   "--out", str(out), "--quiet"])
            loop_accuracy.append(json.loads((out / "summary.json").read_text())["test"]["accuracy"])
    print(f"{args.seeds} seeds of {Path(args.config).name}, end to end from the command line")
    print(f"fdl sweep:            {sweep_seconds:7.1f} s   test accuracy "
          f"{np.mean(sweep_accuracy):.3f} ± {np.std(sweep_accuracy):.3f} ({len(sweep_accuracy)} members)")
    print(f"loop of fdl train:    {loop_seconds:7.1f} s   test accuracy "
          f"{np.mean(loop_accuracy):.3f} ± {np.std(loop_accuracy):.3f}")
    ratio = loop_seconds / sweep_seconds
    print(f"{'PASS' if ratio >= 2.5 else 'FAIL'}  fdl sweep is {ratio:.2f}x faster (target >= 2.5x)")


if __name__ == "__main__":
    main()
