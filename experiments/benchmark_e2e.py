"""End to end: the `fdl train CONFIG` process against a hand-written JAX script of the same job.

    python experiments/benchmark_e2e.py [--configs configs/mnist1d_mlp.yaml,configs/mnist1d_cnn.yaml]
                                        [--repeats 3] [--set KEY=VALUE ...] [--json PATH]
    python experiments/benchmark_e2e.py --smoke          # seconds: the MLP, 1 epoch, 1 repeat

Both sides are whole processes (interpreter start, imports, data, compile, training,
validation, records, test evaluation), timed wall-clock by this script:

  fdl   `fdl train CONFIG --out DIR --quiet` with the config as it is (plus `--set`)
  hand  HAND_SCRIPT below, written to a temporary file and run as `python hand.py`: the
        job the config describes, the best a careful engineer would write without fdl —
        the cached MNIST-1D arrays fdl.data.load made (the same file fdl reads), a
        stratified validation split, the same architecture and initializers
        (lecun-normal weights, zero biases), the config's optimizer and schedule
        (optax), random shifts of up to `max_shift` samples, the same epochs and batch
        size; a jitted epoch fused with `lax.scan` (on-device shuffle and gather),
        validation (loss, accuracy, macro F1) after every epoch with one `device_get`
        per epoch, the best state by the config's monitor kept, metrics.jsonl written
        line by line, the last and best parameters saved, train/val/test evaluated at
        the end and summary.json written. (The CNN's convolution is im2col on CPU, as
        fdl's `implementation="auto"`: XLA:CPU's convolution is ~4x slower in a scan.)

fdl also writes what the hand script does not (TensorBoard events, plots, a checkpoint
per epoch, env.json): that is part of what `fdl train` costs; leave it out with
`--set output.tensorboard=false --set output.plots=false`.

COLD and WARM: each repeat gives each side a fresh, empty JAX compilation cache folder
(JAX_COMPILATION_CACHE_DIR and fdl's FDL_COMPILATION_CACHE both point at it, and
JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 caches every program), runs it cold, then
runs it again warm with the same folder: fdl cold, hand cold, fdl warm, hand warm, the
sides' order swapped every repeat. Prints per config and side the medians of the wall times, of
the time to the first training step (hand: from the start of its job to its first epoch
dispatched, after its imports; fdl: the first number on a printed line containing "first
step", else summary.json's first_step_s, else "-" — fdl's clock also starts after the
imports), of summary.json's compile_s, train_s, eval_s and
records_s where present ("-" where absent), the test accuracy, and the ratio fdl/hand,
cold and warm (target <= 1.15x).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from program import FDL

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("configs/mnist1d_mlp.yaml", "configs/mnist1d_cnn.yaml")
TARGET = 1.15
SUMMARY_KEYS = ("compile_s", "train_s", "eval_s", "records_s")
SMOKE_OVERRIDES = ("training.epochs=1", "data.limit_train=400", "output.tensorboard=false",
                   "output.plots=false")
FIRST_STEP = re.compile(r"first step\D*?(\d+(?:\.\d+)?)", re.IGNORECASE)

HAND_SCRIPT = r'''
"""The job of an fdl MNIST-1D config, by hand: python hand.py RECIPE.json OUT_DIR."""
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

START = time.perf_counter()  # the job starts after the imports, as fdl's clock does

recipe, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
out.mkdir(parents=True)
compile_seconds = [0.0]
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: compile_seconds.__setitem__(0, compile_seconds[0] + seconds)
    if event.startswith("/jax/core/compile/") and event.endswith("_duration") else None)

# ---- data: the cached arrays, a stratified validation split -----------------------------
arrays = np.load(recipe["data_file"])
x_all, y_all = arrays["x"].astype(np.float32), arrays["y"].astype(np.int32)
if recipe["limit_train"]:
    x_all, y_all = x_all[:recipe["limit_train"]], y_all[:recipe["limit_train"]]
rng = np.random.default_rng(recipe["seed"])
in_val = np.zeros(len(y_all), bool)
for label in np.unique(y_all):
    members = np.flatnonzero(y_all == label)
    in_val[rng.choice(members, round(recipe["val_fraction"] * len(members)), replace=False)] = True
splits = {"train": (x_all[~in_val], y_all[~in_val]), "val": (x_all[in_val], y_all[in_val]),
          "test": (arrays["x_test"].astype(np.float32), arrays["y_test"].astype(np.int32))}
splits = {name: jax.device_put(split) for name, split in splits.items()}
x_train, y_train = splits["train"]
classes, batch_size = 10, recipe["batch_size"]
steps_per_epoch = x_train.shape[0] // batch_size

# ---- model ------------------------------------------------------------------------------
lecun = jax.nn.initializers.lecun_normal()


def conv(x, w, stride):
    """SAME 1-D convolution, x (batch, length, C), w (kernel, C, F); im2col on CPU."""
    if jax.default_backend() != "cpu":
        return lax.conv_general_dilated(x, w, (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
    kernel, length = w.shape[0], x.shape[1]
    size = -(-length // stride)
    total = max((size - 1) * stride + kernel - length, 0)
    x = jnp.pad(x, ((0, 0), (total // 2, total - total // 2), (0, 0)))
    taps = [x[:, t:t + (size - 1) * stride + 1:stride] for t in range(kernel)]
    return jnp.einsum("bokc,kcf->bof", jnp.stack(taps, axis=2), w)


def init(key):
    shapes, features = [], x_train.shape[1]
    if recipe["model"] == "mlp":
        for width in recipe["hidden"]:
            shapes.append((features, width))
            features = width
    else:
        channels, length = 1, features
        for kernel in recipe["kernel_sizes"]:
            shapes.append((kernel, channels, recipe["channels"]))
            channels, length = recipe["channels"], -(-length // recipe["strides"])
        features = channels * length
    shapes.append((features, classes))
    keys = jax.random.split(key, len(shapes))
    return [{"w": lecun(k, shape), "b": jnp.zeros(shape[-1])} for k, shape in zip(keys, shapes)]


def logits_of(params, x):
    if recipe["model"] == "cnn":
        x = x[..., None]
        for layer in params[:-1]:
            x = jax.nn.relu(conv(x, layer["w"], recipe["strides"]) + layer["b"])
        x = x.reshape(x.shape[0], -1)
    else:
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def shift(key, x):
    """Each row shifted by its own uniform integer in [-s, s], zero fill."""
    s = recipe["max_shift"]
    if not s:
        return x
    shifts = jax.random.randint(key, (x.shape[0],), -s, s + 1)
    padded = jnp.pad(x, ((0, 0), (s, s)))
    return jax.vmap(lambda row, k: lax.dynamic_slice_in_dim(row, s - k, x.shape[1]))(padded, shifts)


def scores(loss, predictions, labels):
    """loss, accuracy and macro F1 (over the classes present) of flat predictions."""
    confusion = jnp.zeros((classes, classes)).at[labels, predictions].add(1.0)
    true_positives, predicted, actual = jnp.diag(confusion), confusion.sum(0), confusion.sum(1)
    precision = true_positives / jnp.maximum(predicted, 1.0)
    recall = true_positives / jnp.maximum(actual, 1.0)
    f1 = jnp.where(precision + recall > 0, 2 * precision * recall / (precision + recall + 1e-12), 0.0)
    present = actual > 0
    return {"loss": loss, "accuracy": true_positives.sum() / labels.shape[0],
            "f1": jnp.sum(jnp.where(present, f1, 0.0)) / jnp.sum(present)}


# ---- optimizer ----------------------------------------------------------------------------
spec = recipe["optimizer"]
learning_rate = spec["learning_rate"]
if spec["decay_steps"]:
    learning_rate = optax.cosine_decay_schedule(learning_rate, spec["decay_steps"], spec["alpha"])
optimizer = (optax.adamw(learning_rate, weight_decay=spec["weight_decay"]) if spec["name"] == "adamw"
             else optax.adam(learning_rate))


def loss_of(params, x, y):
    logits = logits_of(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


@jax.jit
def train_epoch(params, opt_state, key, epoch):
    order_key, shift_key = jax.random.split(jax.random.fold_in(key, epoch))
    order = jax.random.permutation(order_key, x_train.shape[0])[:steps_per_epoch * batch_size]

    def step(carry, inputs):
        params, opt_state = carry
        rows, step_key = inputs
        x, y = shift(step_key, x_train[rows]), y_train[rows]
        (loss, logits), grads = jax.value_and_grad(loss_of, has_aux=True)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, jnp.argmax(logits, -1), y)

    (params, opt_state), (losses, predictions, labels) = lax.scan(
        step, (params, opt_state),
        (order.reshape(steps_per_epoch, batch_size), jax.random.split(shift_key, steps_per_epoch)))
    return params, opt_state, scores(losses.mean(), predictions.ravel(), labels.ravel())


@jax.jit
def evaluate(params, x, y):
    loss, logits = loss_of(params, x, y)
    return scores(loss, jnp.argmax(logits, -1), y)


# ---- the run ----------------------------------------------------------------------------------
init_key, run_key = jax.random.split(jax.random.PRNGKey(recipe["seed"]))
params = jax.jit(init)(init_key)
opt_state = optimizer.init(params)
monitor = recipe["monitor"].removeprefix("val_")
sign = -1.0 if monitor == "loss" else 1.0
best_value, best, best_epoch = -np.inf, params, 0
# As fdl's summary: train_s and eval_s leave out the compiling done meanwhile (compile_s has it all).
train_seconds, compiled_before = 0.0, compile_seconds[0]
with open(out / "metrics.jsonl", "w") as metrics_file:
    for epoch in range(recipe["epochs"]):
        started = time.perf_counter()
        params, opt_state, train = train_epoch(params, opt_state, run_key, epoch)
        val = evaluate(params, *splits["val"])
        if epoch == 0:
            print(f"first step: {time.perf_counter() - START:.3f} s", flush=True)
        train, val = jax.device_get((train, val))  # the epoch's one read
        seconds = time.perf_counter() - started
        train_seconds += seconds
        if sign * val[monitor] > best_value:
            best_value, best, best_epoch = sign * val[monitor], params, epoch + 1
        logs = {"epoch": epoch + 1, **{k: float(v) for k, v in train.items()},
                **{f"val_{k}": float(v) for k, v in val.items()}, "time_s": seconds}
        metrics_file.write(json.dumps(logs) + "\n")
        metrics_file.flush()

train_seconds -= compile_seconds[0] - compiled_before
started, compiled_before = time.perf_counter(), compile_seconds[0]
final = {name: {k: float(v) for k, v in jax.device_get(evaluate(params, *split)).items()}
         for name, split in splits.items()}
eval_seconds = time.perf_counter() - started - (compile_seconds[0] - compiled_before)
started = time.perf_counter()
for name, tree in (("last", params), ("best", best)):
    leaves = jax.device_get(jax.tree.leaves(tree))
    np.savez(out / f"{name}.npz", *leaves)
summary = {**final, "epochs": recipe["epochs"], "best_epoch": best_epoch,
           "wall_time_s": time.perf_counter() - START, "compile_s": compile_seconds[0],
           "train_s": train_seconds, "eval_s": eval_seconds}
summary["records_s"] = time.perf_counter() - started
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({name: final[name] for name in ("train", "val", "test")}))
'''


def recipe(config_path: str, overrides: list[str]) -> dict:
    """What the hand script needs to run the config's job; one-line error for what it cannot."""
    import fdl
    from fdl.config import load_config
    from fdl.data.sources import MNIST1D_CACHE_FILE, cache_dir

    config = load_config(config_path, overrides)
    where = f"{config_path}: the hand-written script"
    if config.data.name != "mnist1d" or config.data.preprocess or config.data.path:
        raise SystemExit(f"{where} reads the built-in mnist1d without preprocessing, got data.name="
                         f"{config.data.name}, preprocess={config.data.preprocess}")
    augment = list(config.data.augment or [])
    if any(set(a) != {"random_shift"} for a in augment) or len(augment) > 1:
        raise SystemExit(f"{where} knows data.augment [random_shift] only, got {augment}")
    optimizer, schedule = config.optimizer, config.optimizer.schedule
    known_schedule = schedule is None or (schedule.name == "cosine"
                                          and set(schedule) <= {"name", "decay_steps", "alpha"})
    extra = [key for key in ("b1", "b2", "eps", "momentum", "nesterov", "clip_global_norm")
             if optimizer.get(key) is not None]
    if optimizer.name not in ("adam", "adamw") or extra or optimizer.accumulate_steps != 1 \
            or not known_schedule:
        raise SystemExit(f"{where} knows adam/adamw (learning_rate, weight_decay) with an optional cosine "
                         f"schedule, got optimizer {optimizer.name}, {extra or 'no other keys'}, schedule "
                         f"{schedule}")
    model = {"mnist1d_mlp": "mlp", "mnist1d_cnn": "cnn"}.get(config.model.name)
    if model is None or config.model.layers:
        raise SystemExit(f"{where} knows model.name mnist1d_mlp and mnist1d_cnn, got {config.model.name}")
    args = dict(config.model.args)
    fdl.data.load("mnist1d")  # makes the cached file both sides read
    return {
        "data_file": str(cache_dir() / MNIST1D_CACHE_FILE), "limit_train": config.data.limit_train,
        "val_fraction": config.data.val_fraction, "seed": config.seed,
        "max_shift": augment[0]["random_shift"]["max_shift"] if augment else 0,
        "model": model, "hidden": list(args.get("hidden", [100, 100])),
        "channels": args.get("channels", 25), "kernel_sizes": list(args.get("kernel_sizes", [5, 3, 3])),
        "strides": args.get("strides", 2),
        "optimizer": {"name": optimizer.name, "learning_rate": optimizer.learning_rate,
                      "weight_decay": optimizer.weight_decay if optimizer.weight_decay is not None else 1e-4,
                      "decay_steps": schedule.decay_steps if schedule is not None else None,
                      "alpha": schedule.get("alpha", 0.0) if schedule is not None else 0.0},
        "epochs": config.training.epochs, "batch_size": config.training.batch_size,
        "monitor": config.callbacks.checkpoint.monitor,
    }


def run_process(command: list[str], cache: Path) -> tuple[float, str]:
    """(wall seconds, stdout + stderr) of one process with the compilation cache in `cache`."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), FDL_COMPILATION_CACHE=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout + done.stderr


def figures(seconds: float, output: str, out: Path) -> dict:
    """One run's figures: wall_s, first_step_s, test_accuracy and the summary keys (None if absent)."""
    summary = json.loads((out / "summary.json").read_text())
    timing = {**summary.get("timing", {}), **summary}
    printed = FIRST_STEP.search(output)
    first_step = float(printed[1]) if printed else timing.get("first_step_s")
    return {"wall_s": seconds, "first_step_s": first_step, "test_accuracy": summary["test"]["accuracy"],
            **{key: timing.get(key) for key in SUMMARY_KEYS}}


def measure(config_path: str, overrides: list[str], repeats: int, folder: Path) -> dict:
    """side -> phase ("cold", "warm") -> list of per-repeat figures."""
    script = folder / "hand.py"
    script.write_text(HAND_SCRIPT)
    recipe_file = folder / f"{Path(config_path).stem}.json"
    recipe_file.write_text(json.dumps(recipe(config_path, overrides)))
    sets = [part for override in overrides for part in ("--set", override)]
    commands = {"fdl": lambda out: [FDL, "train", config_path, *sets, "--out", str(out),
                                    "--quiet"],
                "hand": lambda out: [sys.executable, str(script), str(recipe_file), str(out)]}
    results = {side: {"cold": [], "warm": []} for side in commands}
    for repeat in range(repeats):
        order = list(commands) if repeat % 2 == 0 else list(commands)[::-1]
        caches = {side: Path(tempfile.mkdtemp(prefix=f"jax-cache-{side}-", dir=folder)) for side in order}
        for phase in ("cold", "warm"):  # fdl, hand, fdl, hand (hand first in odd repeats)
            for side in order:
                out = folder / f"{Path(config_path).stem}-{side}-{repeat}-{phase}"
                seconds, output = run_process(commands[side](out), caches[side])
                results[side][phase].append(figures(seconds, output, out))
    return results


def median(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None


def shown(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:{width}.{digits}f}"


def report(name: str, results: dict) -> list[dict]:
    """Prints the config's rows and returns its targets."""
    print(f"\n== {name} ==")
    print(f"{'side':6s} {'phase':5s} {'wall_s':>8s} {'first_step_s':>12s} " +
          " ".join(f"{key:>10s}" for key in SUMMARY_KEYS) + f" {'test_acc':>9s}")
    for side, phases in results.items():
        for phase, rows in phases.items():
            figures_shown = " ".join(shown(median(rows, key), 10) for key in SUMMARY_KEYS)
            print(f"{side:6s} {phase:5s} {shown(median(rows, 'wall_s'), 8)} "
                  f"{shown(median(rows, 'first_step_s'), 12)} {figures_shown} "
                  f"{shown(median(rows, 'test_accuracy'), 9, 3)}")
    found = []
    for phase in ("cold", "warm"):
        ratio = round(median(results["fdl"][phase], "wall_s") / median(results["hand"][phase], "wall_s"), 2)  # judged as shown
        print(f"ratio fdl/hand {phase}: {ratio:.2f}x (target <= {TARGET:.2f}x)")
        found.append({"config": name, "phase": phase, "ratio": ratio, "passed": ratio <= TARGET})
    return found


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated config files")
    parser.add_argument("--repeats", type=int, default=3, help="cold + warm runs per side (default 3)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both sides, repeatable, e.g. training.epochs=20")
    parser.add_argument("--json", metavar="PATH", help="also write every run's figures to this JSON file")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: the MLP config, 1 epoch on 400 examples, 1 repeat, no plots")
    args = parser.parse_args(argv)
    if args.smoke:
        args.configs, args.repeats = CONFIGS[0], 1
        args.overrides = [*SMOKE_OVERRIDES, *args.overrides]
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    print(f"fdl train vs a hand-written JAX script of the same job, whole processes; medians of "
          f"{args.repeats} (cold: a fresh compilation cache; warm: the same cache again)"
          + (f"; overrides {' '.join(args.overrides)}" if args.overrides else ""))
    every, targets = {}, []
    with tempfile.TemporaryDirectory(prefix="benchmark_e2e-") as folder:
        for config_path in configs:
            path = str((ROOT / config_path) if not Path(config_path).is_absolute() else config_path)
            every[config_path] = measure(path, args.overrides, args.repeats, Path(folder))
            targets += report(Path(config_path).stem, every[config_path])
    print("\n== targets ==")
    for target in targets:
        print(f"{'PASS' if target['passed'] else 'FAIL'}  {target['config']} {target['phase']}: "
              f"fdl/hand {target['ratio']:.2f}x (target <= {TARGET:.2f}x)")
    result = {"runs": every, "targets": targets, "repeats": args.repeats, "overrides": args.overrides}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
