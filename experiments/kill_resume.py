"""Kill `fdl train` with SIGKILL again and again; every resumed run must end as the uninterrupted one.

    python experiments/kill_resume.py            # 20 kills of the MNIST-1D MLP (a few minutes)
    python experiments/kill_resume.py --smoke    # 3 kills of a tiny run (the suite's share)

One uninterrupted `fdl train configs/mnist1d_mlp.yaml` (shortened, checkpoints
every epoch and every few steps inside it: `callbacks.checkpoint.every_steps`)
is the reference. Then the same command with `--resume auto` is
started, SIGKILLed, and started again until it finishes: each kill lands at a
random moment (start-up, a step, a validation, a record being written: up to
50 ms after a random number of epochs is recorded — mostly mid-epoch, so the
resume continues from a chunk), and every third lands inside a checkpoint
write (the moment orbax's temporary folder appears). At the end the two run
directories must agree bit for bit: the
newest checkpoint's arrays, every line of metrics.jsonl and summary.json —
wall-clock fields (time_s, steps_per_s, *_s timings) aside, as they differ
between any two runs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from program import FDL

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("time_s", "steps_per_s", "wall_time_s", "first_step_s", "compile_s", "train_s", "eval_s", "records_s")
OVERRIDES = {"full": ["training.epochs=30", "data.limit_train=2000", "output.plots=false",
                      "callbacks.checkpoint.every_steps=4", "callbacks.checkpoint.every_seconds=null",
                      "training.verbose=0"],
             "smoke": ["training.epochs=6", "data.limit_train=400", "model.args.hidden=[16]", "output.plots=false",
                       "output.tensorboard=false", "callbacks.checkpoint.every_steps=2",
                       "callbacks.checkpoint.every_seconds=null", "training.verbose=0"]}


def train_command(out: Path, overrides: list[str], resume: bool) -> list[str]:
    command = [FDL, "train", str(ROOT / "configs" / "mnist1d_mlp.yaml"), "--out", str(out)]
    return command + (["--resume", "auto"] if resume else []) + [item for o in overrides for item in ("--set", o)]


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - started


def in_checkpoint_write(out: Path) -> bool:
    folder = out / "checkpoints"
    return folder.is_dir() and any("tmp" in path.name for path in folder.iterdir())


def epochs_recorded(out: Path) -> int:
    metrics = out / "metrics.jsonl"
    return metrics.read_bytes().count(b"\n") if metrics.is_file() else 0


def killed_run(command: list[str], out: Path, after_epochs: int, delay: float, inside_write: bool) -> bool:
    """Starts `command`, SIGKILLs it `delay` s after `after_epochs` epochs are recorded (or, with
    `inside_write`, while its next checkpoint is being written); False if it finished first."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    due = None
    while process.poll() is None:
        if inside_write:
            due = time.perf_counter() if in_checkpoint_write(out) else None
        elif due is None and epochs_recorded(out) >= after_epochs:
            due = time.perf_counter() + delay
        if due is not None and time.perf_counter() >= due:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.0005)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {process.returncode}")
    return False


def resumes_mid_epoch(out: Path) -> bool:
    """Whether the newest checkpoint in `out` was written inside an epoch (so the resume starts mid-way)."""
    from fdl.train.checkpoint import RunCheckpoints

    checkpoints = RunCheckpoints(out / "checkpoints")
    try:
        steps = checkpoints.steps()
        return bool(steps) and checkpoints.metadata(steps[-1])["done"] > 0
    finally:
        checkpoints.close()


def without_timing(row: dict) -> dict:
    return {key: value for key, value in row.items() if key not in TIMING}


def fingerprint(out: Path) -> dict:
    """What must agree: the newest checkpoint's arrays (bytes), metrics.jsonl rows, summary.json."""
    from fdl.train.checkpoint import RunCheckpoints, leaves_by_path

    checkpoints = RunCheckpoints(out / "checkpoints")
    step, items, metadata = checkpoints.newest({"state": None, "best": None})
    checkpoints.close()
    arrays = {f"{name}/{path}": np.asarray(leaf).tobytes() for name, tree in items.items()
              for path, leaf in leaves_by_path(tree)}
    lines = [without_timing(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = without_timing(json.loads((out / "summary.json").read_text()))
    return {"step": step, "arrays": arrays, "metrics": lines, "summary": summary}


def kill_and_resume(workdir: Path, kills: int, *, smoke: bool, seed: int = 0) -> dict:
    """Runs the reference, then the killed-and-resumed run; returns the figures and whether they agree."""
    overrides = OVERRIDES["smoke" if smoke else "full"]
    reference, killed = workdir / "reference", workdir / "killed"
    reference_s = run(train_command(reference, overrides, resume=False))
    epochs = len((reference / "metrics.jsonl").read_text().splitlines())
    draw, done, landed, inside, mid_epoch = random.Random(seed), 0, 0, 0, 0
    while landed < kills:
        write = landed % 3 == 2
        if killed_run(train_command(killed, overrides, resume=True), killed, draw.randrange(epochs),
                      draw.uniform(0.0, 0.05), write):
            landed, inside = landed + 1, inside + write
            mid_epoch += resumes_mid_epoch(killed)
        else:
            done += 1
            break
    if not done:
        run(train_command(killed, overrides, resume=True))
    a, b = fingerprint(reference), fingerprint(killed)
    differing = [key for key in a if a[key] != b[key]]
    return {"kills": landed, "inside_writes": inside, "mid_epoch": mid_epoch, "reference_s": reference_s, "epochs": len(a["metrics"]),
            "arrays": len(a["arrays"]), "identical": not differing, "differing": differing}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    kills = args.kills or (3 if args.smoke else 20)
    import tempfile

    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        result = kill_and_resume(Path(workdir), kills, smoke=args.smoke, seed=args.seed)
    print(f"kills {result['kills']} (inside a checkpoint write {result['inside_writes']}, resumed mid-epoch "
          f"{result['mid_epoch']}); reference run "
          f"{result['reference_s']:.1f} s; compared {result['epochs']} metrics lines, {result['arrays']} arrays, "
          "summary.json")
    print("PASS  identical" if result["identical"] else f"FAIL  differ: {', '.join(result['differing'])}")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main())
