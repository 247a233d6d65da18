"""The MNIST-1D paper's model table, reproduced with fdl over several seeds.

Trains configs/mnist1d_{logreg,mlp,cnn,gru}.yaml with `fdl.config.train_from_config`
once per seed (`--set seed=i`) and prints, per model, the test accuracy mean ± std
over the seeds (population std), the mean wall time of one run (data, compile,
training, evaluation), the paper's figure (Greydanus & Kalis 2020, table 1) and
PASS when the mean reaches it.

    python experiments/mnist1d_table.py                 # 3 seeds, several minutes on 2 cores
    python experiments/mnist1d_table.py --quick --seeds 1   # 5 epochs per run
    python experiments/mnist1d_table.py --smoke             # seconds: 1 seed, 1 epoch on 200 examples
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fdl.config import load_config
from fdl.runs import train_from_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = {"mnist1d_logreg": 0.32, "mnist1d_mlp": 0.68, "mnist1d_cnn": 0.94, "mnist1d_gru": 0.91}
QUICK_EPOCHS = 5
SMOKE_OVERRIDES = ["training.epochs=1", "data.limit_train=200", "output.tensorboard=false",
                   "output.plots=false"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model (default 3)")
    parser.add_argument("--out", metavar="DIR", help="parent of the run directories (default: a "
                        "temporary folder, deleted at the end)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs per run")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not minutes: seed 0 only, " + " ".join(SMOKE_OVERRIDES))
    parser.add_argument("--models", default=",".join(PAPER), help="comma-separated subset of "
                        f"{', '.join(PAPER)}")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = 1
    return args


def train_one(name: str, seed: int, out: Path, quick: bool, smoke: bool = False) -> tuple[float, float]:
    """(test accuracy, wall seconds) of one run of configs/<name>.yaml."""
    overrides = [f"seed={seed}", f"output.dir={out / f'{name}-seed{seed}'}", "training.verbose=0"]
    overrides += [f"training.epochs={QUICK_EPOCHS}"] if quick else []
    overrides += SMOKE_OVERRIDES if smoke else []
    start = time.perf_counter()
    result = train_from_config(load_config(CONFIGS / f"{name}.yaml", overrides))
    return result.summary["test"]["accuracy"], time.perf_counter() - start


def table_row(name: str, accuracies: list[float], seconds: list[float]) -> str:
    mean, std = statistics.fmean(accuracies), statistics.pstdev(accuracies)
    verdict = "PASS" if round(mean, 3) >= PAPER[name] else "below"  # judged as shown
    return (f"{name:<16} {f'{mean:.3f} ± {std:.3f}':>15}   {f'{statistics.fmean(seconds):.1f} s':>9}   "
            f"{PAPER[name]:5.2f}   {verdict}")


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in PAPER]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown[0]!r} — valid: {', '.join(PAPER)}")
    with tempfile.TemporaryDirectory(prefix="mnist1d_table-") as temporary:
        out = Path(args.out or temporary)
        rows = []
        for name in names:
            runs = [train_one(name, seed, out, args.quick, args.smoke) for seed in range(args.seeds)]
            rows.append(table_row(name, [a for a, _ in runs], [s for _, s in runs]))
            print(f"[{len(rows)}/{len(names)}] {rows[-1]}", flush=True)
    header = f"{'model':<16} {'test accuracy':>15}   {'s/run':>9}   {'paper':>5}   verdict"
    quick = " (smoke: 1 epoch)" if args.smoke else f" (quick: {QUICK_EPOCHS} epochs)" if args.quick else ""
    print(f"\nMNIST-1D, {args.seeds} seed(s){quick}")
    print("\n".join([header, "-" * len(header), *rows]))
    return rows


if __name__ == "__main__":
    main()
