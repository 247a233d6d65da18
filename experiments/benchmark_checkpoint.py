"""What a checkpoint costs the training it is saved from: the wide MLP, one save per epoch.

    python experiments/benchmark_checkpoint.py             # 40-1000-1000-10 MLP on MNIST-1D, ~1 min
    python experiments/benchmark_checkpoint.py --smoke     # seconds: a small MLP, few epochs

The same `fdl.fit` (Adam, batch 100, the MNIST-1D training split: 40 steps an
epoch; the state with Adam's moments is 12.6 MB) runs three ways, one after the
other in this process, each `--epochs` epochs:

  none          no checkpoint — the baseline: the machine's epoch for this model
  every epoch   ModelCheckpoint(every=1, every_seconds=None): one save per epoch
  chunks        ModelCheckpoint(every_steps=STEPS // 2, every_seconds=1e9): the epoch in 2
                compiled chunks, no save after the first (what cutting the epoch costs)
  every_steps   ModelCheckpoint(every_steps=STEPS // 2): 2 chunks, 2 saves per epoch

Prints, per way, the median epoch time over the epochs after the first two (the
first compiles) and the cost per step of what it adds, as a share of the
baseline's step: (epoch - baseline epoch) / steps / baseline step. The target
of the "survive anything" issue is <= 5% with one save per epoch.

Then the CPU time of one save of the trained state (RunCheckpoints.save + wait,
process time: every thread, orbax's included), on this process idle otherwise:
the median of `--saves`. Unlike the wall-time figures it holds on a loaded
machine, and it is what the save takes from training that keeps the cores busy.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.05


def epoch_seconds(history) -> float:
    """Median wall time of an epoch, leaving out the first two (compilation, first save)."""
    return statistics.median(history["time_s"][2:])


def save_cpu_ms(state, folder: Path, saves: int) -> float:
    """Median CPU milliseconds (process time) of one checkpoint of `state`: queued, written, waited for."""
    from fdl.train.checkpoint import RunCheckpoints

    checkpoints = RunCheckpoints(folder, keep=2)
    checkpoints.save(0, {"state": state}, {"epoch": 0})  # opens orbax's manager
    checkpoints.wait()
    seconds = []
    for step in range(1, saves + 1):
        started = time.process_time()
        checkpoints.save(step, {"state": state}, {"epoch": step})
        checkpoints.wait()
        seconds.append(time.process_time() - started)
    checkpoints.close()
    return statistics.median(seconds) * 1e3


def measure(epochs: int, hidden: int, limit: int | None, saves: int) -> dict:
    import jax
    import numpy as np

    import fdl
    from fdl import nn
    from fdl.train.callbacks import ModelCheckpoint

    data = fdl.data.load("mnist1d")
    x, y = data.train.x, data.train.y
    if limit is not None:
        x, y = x[:limit], y[:limit]
    model = nn.serial(nn.Dense(hidden), nn.Relu(), nn.Dense(hidden), nn.Relu(), nn.Dense(10))
    steps = x.shape[0] // 100
    common = dict(batch_size=100, epochs=epochs, verbose=0, seed=0,
                  optimizer={"name": "adam", "learning_rate": 1e-3})
    results = {"steps": steps, "saves": saves}
    with tempfile.TemporaryDirectory() as folder:
        ways = {"none": [],
                "every epoch": [ModelCheckpoint(Path(folder) / "epoch", monitor=None, every_seconds=None)],
                "chunks": [ModelCheckpoint(Path(folder) / "chunks", monitor=None, every_steps=steps // 2,
                                           every_seconds=1e9)],
                "every_steps": [ModelCheckpoint(Path(folder) / "steps", monitor=None, every_steps=steps // 2,
                                                every_seconds=None)]}
        for name, callbacks in ways.items():
            state, history = fdl.fit(model, (x, y), callbacks=callbacks, **common)
            results[name] = epoch_seconds(history)
        results["state_mb"] = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state)) / 1e6
        results["save_cpu_ms"] = save_cpu_ms(state, Path(folder) / "cpu", saves)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--saves", type=int, default=20, help="saves timed for the CPU time of one")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        result = measure(epochs=4, hidden=64, limit=800, saves=3)
    else:
        result = measure(epochs=args.epochs, hidden=1000, limit=None, saves=args.saves)
    steps, base = result["steps"], result["none"]
    print(f"state {result['state_mb']:.1f} MB; {steps} steps an epoch; baseline epoch {base * 1e3:.1f} ms "
          f"({base / steps * 1e3:.2f} ms a step)")
    for name, saves in (("every epoch", 1), ("chunks", 0), ("every_steps", 2)):
        cost = (result[name] - base) / base
        print(f"{name:12s} epoch {result[name] * 1e3:7.1f} ms  {saves} save(s)  cost per step {cost:+.1%} of a step"
              + (f"  (target <= {TARGET:.0%}: {'PASS' if cost <= TARGET else 'MISS'})" if saves == 1 else ""))
    print(f"one save: {result['save_cpu_ms']:.1f} ms of CPU (process time, median of {result['saves']} "
          f"on this process, idle otherwise), {result['save_cpu_ms'] / (base * 1e3):.0%} of a baseline epoch's wall time")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main())
