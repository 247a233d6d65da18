"""Steady state: what an epoch of `fdl train` costs around its compiled programs.

    python experiments/benchmark_overhead.py [--config configs/mnist1d_mlp.yaml] [--epochs 150] [--repeats 3]
    python experiments/benchmark_overhead.py --smoke      # seconds: 8 epochs of 800 examples, 1 repeat

The issue's measure: (epoch wall time - pure compiled epoch time) <= 10% of the
epoch's compute, on the MNIST-1D MLP (36 steps an epoch). Three ways, each
repeat in this order, in this one process (every program compiled before it is timed):

  pure    the compiled programs alone, back to back on the same device arrays:
          fit's fused training epoch (the same step, augmentation, optimizer and
          metrics, fed the epoch's batches staged once on the device) then fit's
          validation program, `--epochs` times, one wait at the end. The limit.
  fit     `fdl.fit` of the config's arguments with its validation, no callbacks:
          the median of its history's per-epoch wall times (epochs 3 on; an epoch's
          wall is from one epoch's logs reaching the host to the next's).
  train   `fdl train CONFIG` in process (`train_from_config`: metrics.jsonl,
          TensorBoard, checkpoints, plots, the progress bar off): the same median.

Prints each way's ms per epoch and (way - pure) / pure, against the 10% target.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.10
ROOT = Path(__file__).resolve().parents[1]


def pure_epoch_seconds(arguments, epochs: int) -> float:
    """Seconds per epoch of fit's own compiled epoch and validation programs, data in place."""
    import jax
    import numpy as np

    import fdl
    from fdl.train.epoch import make_batches_epoch, stage_epoch
    from fdl.train.evaluate import Evaluator
    from fdl.train.fit import as_optimizer, metrics_for
    from fdl.train.placement import _summarized
    from fdl.train.state import init_train_state
    from fdl.train.step import make_train_step
    from fdl.data.order import batch_indices
    from fdl.train.state import data_key

    kwargs = arguments.fit_arguments()
    dataset = arguments.data.dataset
    input_shape = tuple(dataset.feature_shape)
    tx = as_optimizer(kwargs["optimizer"])
    model, loss = arguments.model, fdl.losses.get_loss(kwargs["loss"])
    metrics = metrics_for(model, input_shape, kwargs["metrics"])
    state = init_train_state(model, input_shape, tx, kwargs["seed"])
    step = make_train_step(model, loss, tx, augment=kwargs["augment"])
    epoch = make_batches_epoch(step, metrics)
    run = jax.jit(lambda state, batches: _summarized(*epoch(state, batches)), donate_argnums=0)
    train = (np.asarray(dataset.train.x), np.asarray(dataset.train.y))
    rows = batch_indices(np.asarray(data_key(state)), 0, len(train[0]), kwargs["batch_size"])
    batches = jax.device_put(stage_epoch(train, rows))
    evaluator = Evaluator(model, loss=loss, metrics=metrics, batch_size=kwargs["eval_batch_size"])
    val = evaluator.stage(np.asarray(dataset.val.x), np.asarray(dataset.val.y))

    def epochs_of(count: int, state):
        for _ in range(count):
            state, summary = run(state, batches)
            scores = evaluator.evaluate_staged(state.params, state.model_state, val, state.step)
        jax.block_until_ready((state, summary, scores))
        return state

    state = epochs_of(2, state)  # compiles both
    start = time.perf_counter()
    epochs_of(epochs, state)
    return (time.perf_counter() - start) / epochs


def steady_epoch_seconds(history) -> float:
    """Median per-epoch wall time from the third epoch on (the first two compile and warm up)."""
    return statistics.median(history["time_s"][2:])


def fit_epoch_seconds(arguments, epochs: int) -> float:
    import fdl

    kwargs = dict(arguments.fit_arguments(), callbacks=[], epochs=epochs, verbose=0)
    dataset = arguments.data.dataset
    _, history = fdl.fit(arguments.model, (dataset.train.x, dataset.train.y), (dataset.val.x, dataset.val.y),
                         **kwargs)
    return steady_epoch_seconds(history)


def train_epoch_seconds(config_path: str, overrides: list[str], out: Path) -> float:
    from fdl.config import load_config
    from fdl.runs import train_from_config

    config = load_config(config_path, [*overrides, "training.verbose=0", f"output.dir={out}"])
    return steady_epoch_seconds(train_from_config(config).history)


def measure(config_path: str, epochs: int, repeats: int, limit: int | None = None) -> dict[str, float]:
    """Medians over repeats of each way's seconds per epoch (`limit`: the first training examples only)."""
    from fdl.config import build_arguments, load_config

    overrides = [f"training.epochs={epochs}"] + ([] if limit is None else [f"data.limit_train={limit}"])
    arguments = build_arguments(load_config(config_path, overrides))
    times = {"pure": [], "fit": [], "train": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            times["pure"].append(pure_epoch_seconds(arguments, epochs))
            times["fit"].append(fit_epoch_seconds(arguments, epochs))
            times["train"].append(train_epoch_seconds(config_path, overrides, Path(folder) / f"run{repeat}"))
    return {way: statistics.median(values) for way, values in times.items()}


def report(config_path: str, seconds: dict[str, float], epochs: int) -> list[str]:
    pure = seconds["pure"]
    lines = [f"== benchmark_overhead: {config_path}, {epochs} epochs, ms per epoch (medians) ==",
             f"{'way':<8}{'ms/epoch':>10}{'overhead':>10}"]
    for way, value in seconds.items():
        lines.append(f"{way:<8}{value * 1e3:>10.3f}{(value - pure) / pure:>+10.1%}")
    for way in ("fit", "train"):
        share = round((seconds[way] - pure) / pure, 3)  # judged as shown, 0.1%
        lines.append(f"{'PASS' if share <= TARGET else 'FAIL'}  {way}: overhead {share:+.1%} of the pure epoch "
                     f"(target <= {TARGET:.0%})")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist1d_mlp.yaml"))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="8 epochs of 800 examples, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.repeats = 8, 1
    seconds = measure(args.config, args.epochs, args.repeats, limit=800 if args.smoke else None)
    print("\n".join(report(args.config, seconds, args.epochs)))


if __name__ == "__main__":
    sys.exit(main())
