"""Steps/s and achieved FLOP/s of `fdl.fit` against hand-written JAX for models of real size.

On 1 device, and (`--devices N`) data-parallel and FSDP on a mesh of N devices.

Two models, float32, the sizes of configs/resnet18.yaml and configs/gpt_small.yaml:

  resnet18  `fdl.nn.models.resnet18()` (11.2 M params, BatchNorm in train mode), batch 128 of
            synthetic 32x32x3 images N(0, 1) with random labels 0-9, cross-entropy, SGD lr 0.1,
            momentum 0.9, Nesterov
  gpt       `fdl.nn.models.gpt(256, context=256, width=384, depth=6, heads=6)` (10.8 M params,
            scanned blocks, no dropout), batch 16 of synthetic byte sequences (256 inputs and
            their 256 next tokens), masked_sequence_cross_entropy, Adam 3e-4

and two variants of each:

  hand  the machine's limit: the same model written as plain JAX over the params pytree (fdl's
        initial params, read by their names) on whole batches — `lax.conv_general_dilated` and
        batch statistics for the ResNet, `jax.nn.dot_product_attention` in a `lax.scan` over the
        stacked blocks for the GPT — and one jitted `lax.scan` of the optimizer step over
        batches already on the device, cut once before timing (no shuffle, no gather), the
        optax optimizer with its hyperparameters injected as fdl's are
  fdl   `fdl.fit(model, data, ...)` with the data on the device (`placement="device"`): fdl's
        own epoch (shuffle and gather on the device, one fused `lax.scan` per epoch), timed
        from fit's history (`time_s` of epochs 2 .. W + 1 of one call; the first compiles, the
        last has nothing queued behind it; see experiments/benchmark_engine.py)

Both variants first take one step from the same params on the same batch: the losses must agree
to float32 rounding (so both compute the same model), and that single step, jitted and lowered,
gives each variant's FLOPs per step (`jax.jit(step).lower(...).compile().cost_analysis()`:
XLA's count, forward and backward and the optimizer). XLA counts a `lax.scan` body once, not once
per iteration, so the GPT's FLOPs are counted on its unrolled twin (`gpt(..., scan_layers=False)`,
the same arithmetic), for both variants. A window is `--steps` steps (fdl: one
epoch of that many batches); the table shows the best of `--windows` windows, its GFLOP/s
(FLOPs per step x steps/s), and fdl's steps/s over hand's. Target (issue 14): fdl >= 0.95 x hand
in every row.

With `--devices N` each model also trains on a 1-D mesh of N devices, axis "data", the batch split
over it, in two layouts:

  data  params and optimizer state replicated: fdl `fit(mesh=mesh)`; hand: the same jitted scan
        with the batches placed `NamedSharding(mesh, P(None, "data"))` and the carry replicated
        (XLA's SPMD partitioner adds the gradient all-reduce)
  fsdp  each param and optimizer-state array split over "data" along its largest axis that N
        divides (replicated when none does): fdl `fit(mesh=mesh, shard_params="fsdp")`; hand: the
        carry placed so and kept so in the scan (`with_sharding_constraint`), XLA's all-gathers and
        reduce-scatters

On a CPU the N devices are simulated (`--xla_force_host_platform_device_count`; the script starts
itself again with the flag when jax sees fewer): they share its cores, so these rows show the cost
of sharding, not a speed-up. Their FLOPs per step are the 1-device count (the same arithmetic), and
hand's first loss on the mesh must equal its 1-device one.

Run alone on the machine (a 2-core CPU: minutes):
  python experiments/benchmark_scale.py                  # both models, 3 steps a window, 3 windows
  python experiments/benchmark_scale.py --models gpt --steps 5 --windows 5
  python experiments/benchmark_scale.py --devices 8      # + data-parallel and FSDP on 8 (simulated) devices
  python experiments/benchmark_scale.py --smoke          # seconds: width-reduced models, 2 steps; the
                                                         # twin's FLOPs counted before XLA optimises
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import fdl

SEED = 0
TARGET = 0.95
BATCH_NORM_MOMENTUM, EPSILON = 0.9, 1e-5  # resnet18's BatchNorm and every LayerNorm's
FULL = {"resnet18": {"batch": 128, "image": 32, "width": 64},
        "gpt": {"batch": 16, "context": 256, "width": 384, "depth": 6, "heads": 6}}
SMOKE = {"resnet18": {"batch": 8, "image": 16, "width": 4},
         "gpt": {"batch": 4, "context": 32, "width": 32, "depth": 2, "heads": 2}}
VOCAB, CLASSES = 256, 10
SIMULATE = "--xla_force_host_platform_device_count"


class Task(NamedTuple):
    """One model, with what both variants need to train it."""

    name: str
    model: fdl.nn.Layer
    batch_size: int
    data: Any  # fit's train argument: a pytree of (steps * batch, ...) arrays on the device
    fit_arguments: dict  # loss= or objective=, input_shape=
    input_shape: tuple
    fdl_optimizer: optax.GradientTransformation
    hand_optimizer: optax.GradientTransformation
    fdl_loss: Any  # make_train_step's loss (None with an objective)
    objective: Any
    hand_loss: Callable  # (params, model_state, batch) -> (loss, new model_state)
    counted_model: fdl.nn.Layer | None = None  # the same model without a lax.scan, whose FLOPs XLA counts whole


# ---- the hand-written ResNet-18 (batched NHWC, fdl's param names) ---------------------------

def conv(x, w, strides: int):
    """x: (batch, h, w, c), w: (k, k, c, f) HWIO, PyTorch padding k // 2 (resnet18's)."""
    pad = w.shape[0] // 2
    return lax.conv_general_dilated(x, w, (strides, strides), ((pad, pad), (pad, pad)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def batch_norm(x, params, state):
    """Train mode: batch statistics over (batch, h, w); the running ones updated (biased variance)."""
    mean = x.mean(axis=(0, 1, 2))
    var = jnp.square(x - mean).mean(axis=(0, 1, 2))
    y = (x - mean) * lax.rsqrt(var + EPSILON) * params["scale"] + params["bias"]
    running = {"mean": BATCH_NORM_MOMENTUM * state["mean"] + (1 - BATCH_NORM_MOMENTUM) * mean,
               "var": BATCH_NORM_MOMENTUM * state["var"] + (1 - BATCH_NORM_MOMENTUM) * var}
    return y, running


def conv_norm(params, state, x, strides: int, conv_name: str = "conv2d_0", norm_name: str = "batch_norm_1"):
    y, running = batch_norm(conv(x, params[conv_name]["w"], strides), params[norm_name], state[norm_name])
    return y, {**state, norm_name: running}


def block_body(params, state, x, strides: int):
    """conv 3x3 (strides) -> BN -> relu -> conv 3x3 -> BN, with fdl's child names."""
    h, state = conv_norm(params, state, x, strides)
    return conv_norm(params, state, jax.nn.relu(h), 1, "conv2d_3", "batch_norm_4")


def basic_block(params, state, x, strides: int):
    if "residual_0" in params:  # identity shortcut
        h, body = block_body(params["residual_0"], state["residual_0"], x, 1)
        return jax.nn.relu(x + h), {**state, "residual_0": body}
    branches, branch_state = params["parallel_0"], state["parallel_0"]
    h, body = block_body(branches["body"], branch_state["body"], x, strides)
    skip, shortcut = conv_norm(branches["shortcut"], branch_state["shortcut"], x, strides)
    return jax.nn.relu(h + skip), {**state, "parallel_0": {"body": body, "shortcut": shortcut}}


def resnet_forward(params, state, x):
    """x: (batch, h, w, 3) -> ((batch, classes) logits, new running statistics)."""
    h, stem = conv_norm(params["stem"], state["stem"], x, 1)
    h, new_state = jax.nn.relu(h), {**state, "stem": stem}
    for s in range(4):
        stage = dict(state[f"stage_{s}"])
        for b in range(2):
            name = f"block_{b}"
            h, stage[name] = basic_block(params[f"stage_{s}"][name], stage[name], h,
                                         2 if s > 0 and b == 0 else 1)
        new_state[f"stage_{s}"] = stage
    logits = h.mean(axis=(1, 2)) @ params["head"]["w"] + params["head"]["b"]
    return logits, new_state


def resnet_loss(params, model_state, batch):
    x, y = batch
    logits, model_state = resnet_forward(params, model_state, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), model_state


# ---- the hand-written GPT (batched, fdl's param names, blocks stacked for lax.scan) ----------

def layer_norm(x, params):
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + EPSILON) * params["scale"] + params["bias"]


def decoder_block(h, params):
    """Pre-norm causal self-attention and GELU MLP, each with a residual: h (batch, length, width)."""
    attention_params = params["residual_0"]["multi_head_self_attention_1"]
    x = layer_norm(h, params["residual_0"]["layer_norm_0"])
    q, k, v = (jnp.einsum("btf,fhd->bthd", x, attention_params[name]["w"]) + attention_params[name]["b"]
               for name in ("query", "key", "value"))
    heads = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    h = h + jnp.einsum("bthd,hdo->bto", heads, attention_params["out"]["w"]) + attention_params["out"]["b"]
    mlp = params["residual_1"]
    x = layer_norm(h, mlp["layer_norm_0"])
    x = jax.nn.gelu(x @ mlp["dense_1"]["w"] + mlp["dense_1"]["b"], approximate=False)
    return h + x @ mlp["dense_4"]["w"] + mlp["dense_4"]["b"], None


def gpt_loss(params, model_state, batch):
    """Mean next-token cross-entropy over every position of (batch, length + 1) tokens."""
    tokens = batch["tokens"]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    table = params["token_embedding"]["embedding"]
    h = table[inputs] + params["position_embedding"]["embedding"][:inputs.shape[1]]
    h, _ = lax.scan(decoder_block, h, params["blocks"])
    logits = jnp.einsum("btf,vf->btv", layer_norm(h, params["final_norm"]), table)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), model_state


# ---- tasks ------------------------------------------------------------------------------------

def resnet_task(sizes: dict, steps: int) -> Task:
    n, side = steps * sizes["batch"], sizes["image"]
    x_key, y_key = jax.random.split(jax.random.key(SEED))
    x = jax.random.normal(x_key, (n, side, side, 3), jnp.float32)
    y = jax.random.randint(y_key, (n,), 0, CLASSES, jnp.int32)
    sgd = {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}
    return Task("resnet18", fdl.nn.models.resnet18(CLASSES, width=sizes["width"]), sizes["batch"], (x, y),
                {"loss": "cross_entropy"}, (side, side, 3), fdl.optim.make_optimizer("sgd", **sgd),
                optax.inject_hyperparams(optax.sgd)(**sgd), fdl.losses.get_loss("cross_entropy"), None,
                resnet_loss)


def gpt_task(sizes: dict, steps: int) -> Task:
    n, context = steps * sizes["batch"], sizes["context"]
    tokens = jax.random.randint(jax.random.key(SEED), (n, context + 1), 0, VOCAB, jnp.int32)
    data = {"tokens": tokens, "mask": jnp.ones(tokens.shape, bool)}
    model = fdl.nn.models.gpt(VOCAB, context, sizes["width"], sizes["depth"], sizes["heads"])
    objective = fdl.objectives.masked_sequence_cross_entropy()
    return Task("gpt", model, sizes["batch"], data, {"objective": objective, "input_shape": (context,)},
                (context,), fdl.optim.make_optimizer("adam", learning_rate=3e-4),
                optax.inject_hyperparams(optax.adam)(learning_rate=3e-4), None, objective, gpt_loss,
                fdl.nn.models.gpt(VOCAB, context, sizes["width"], sizes["depth"], sizes["heads"], scan_layers=False))


TASKS = {"resnet18": resnet_task, "gpt": gpt_task}


# ---- layouts: 1 device, or a mesh of N with the state replicated (data) or split (fsdp) ---------

class Layout(NamedTuple):
    name: str  # "1 device", "data", "fsdp"
    mesh: Mesh | None = None

    @property
    def label(self) -> str:
        return self.name if self.mesh is None else f"{self.name} {self.mesh.size}"

    @property
    def shard_params(self) -> str | None:
        return "fsdp" if self.name == "fsdp" else None


def layouts(devices: int) -> list[Layout]:
    if devices == 1:
        return [Layout("1 device")]
    mesh = Mesh(jax.local_devices()[:devices], ("data",))
    return [Layout("1 device"), Layout("data", mesh), Layout("fsdp", mesh)]


def hand_sharding(leaf, layout: Layout) -> NamedSharding:
    """Replicated, or (fsdp) split over "data" along the leaf's largest axis that the mesh divides."""
    shape, size = getattr(leaf, "shape", ()), layout.mesh.size
    axes = [a for a in sorted(range(len(shape)), key=lambda a: -shape[a]) if shape[a] % size == 0]
    if layout.name != "fsdp" or not axes:
        return NamedSharding(layout.mesh, PartitionSpec())
    return NamedSharding(layout.mesh, PartitionSpec(*("data" if a == axes[0] else None for a in range(len(shape)))))


# ---- the two variants ---------------------------------------------------------------------------

def hand_update(task: Task):
    """`update((params, model_state, opt_state), batch) -> (carry, loss)`: one optimizer step."""

    def update(carry, batch):
        params, model_state, opt_state = carry
        (loss, model_state), grads = jax.value_and_grad(task.hand_loss, has_aux=True)(params, model_state, batch)
        updates, opt_state = task.hand_optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), model_state, opt_state), loss

    return update


def flops(program) -> float:
    """XLA's FLOP count of a compiled program, or of a lowered one (before XLA's optimisations:
    within ~15% of the compiled count); cost_analysis is a dict, or a list of one in older jax."""
    analysis = program.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])


def first_steps(task: Task, reference: fdl.TrainState, compile_twin: bool = True) -> dict:
    """One step of each variant from `reference` on batch 0: {variant: (loss, FLOPs per step)}.

    Without `compile_twin` (--smoke) the unrolled twin's FLOPs are counted on its lowered
    program, sparing its compile.
    """
    batch = jax.tree.map(lambda leaf: leaf[:task.batch_size], task.data)
    fdl_step = jax.jit(fdl.make_train_step(task.model, task.fdl_loss, task.fdl_optimizer,
                                           objective=task.objective))
    compiled = fdl_step.lower(reference, batch).compile()
    _, logs = compiled(reference, batch)
    carry = (reference.params, reference.model_state, task.hand_optimizer.init(reference.params))
    hand = jax.jit(hand_update(task)).lower(carry, batch).compile()
    _, hand_loss = hand(carry, batch)
    if task.counted_model is None:
        return {"fdl": (float(logs["loss"]), flops(compiled)), "hand": (float(hand_loss), flops(hand))}
    # Both variants scan over the blocks, which XLA counts once: count the unrolled twin instead
    # (the same arithmetic; the equal first losses show both variants compute this model). Lowering
    # needs only the shapes of its state, not its values.
    twin = jax.eval_shape(functools.partial(fdl.init_train_state, task.counted_model, task.input_shape,
                                            task.fdl_optimizer, SEED))
    lowered = jax.jit(fdl.make_train_step(task.counted_model, task.fdl_loss, task.fdl_optimizer,
                                          objective=task.objective)).lower(twin, batch)
    counted = flops(lowered.compile() if compile_twin else lowered)
    return {"fdl": (float(logs["loss"]), counted), "hand": (float(hand_loss), counted)}


def time_hand(task: Task, reference: fdl.TrainState, windows: int,
              layout: Layout = Layout("1 device")) -> tuple[list[float], float]:
    """(seconds of each window, the first step's loss): one jitted lax.scan over the batches,
    already cut and on the device(s)."""
    steps = jax.tree.leaves(task.data)[0].shape[0] // task.batch_size
    batches = jax.tree.map(lambda leaf: leaf.reshape(steps, task.batch_size, *leaf.shape[1:]), task.data)
    params, model_state = jax.tree.map(jnp.copy, (reference.params, reference.model_state))
    carry = (params, model_state, task.hand_optimizer.init(params))
    update, placed = hand_update(task), None
    if layout.mesh is not None:
        placed = jax.tree.map(lambda leaf: hand_sharding(leaf, layout), carry)
        carry = jax.device_put(carry, placed)
        batches = jax.device_put(batches, NamedSharding(layout.mesh, PartitionSpec(None, "data")))
    batches = jax.block_until_ready(batches)

    def step(carry, batch):
        carry, loss = update(carry, batch)
        return (carry if placed is None else lax.with_sharding_constraint(carry, placed)), loss

    @functools.partial(jax.jit, donate_argnums=0, out_shardings=None if placed is None else (placed, None))
    def epoch(carry, batches):
        return lax.scan(step, carry, batches)

    carry, losses = epoch(carry, batches)  # compiles
    first_loss = float(losses[0])
    seconds = []
    for _ in range(windows):
        start = time.perf_counter()
        carry, losses = epoch(carry, batches)
        jax.block_until_ready(losses)
        seconds.append(time.perf_counter() - start)
    return seconds, first_loss


def time_fdl(task: Task, reference: fdl.TrainState, windows: int,
             layout: Layout = Layout("1 device")) -> list[float]:
    """Seconds of each window: epochs 2 .. windows + 1 of one `fdl.fit` call (see the docstring)."""
    # From the shared initial state (a copy: fit may donate it), as `fit(seed=SEED)` would start.
    _, history = fdl.fit(task.model, task.data, optimizer=task.fdl_optimizer, epochs=windows + 2,
                         batch_size=task.batch_size, seed=SEED, state=jax.tree.map(jnp.copy, reference),
                         placement="device", mesh=layout.mesh, shard_params=layout.shard_params, verbose=0,
                         **task.fit_arguments)
    return [row["time_s"] for row in history[1:windows + 1]]


def loss_tolerance() -> float:
    """float32 summation orders differ (vmap per example vs whole batches); GPUs may use TF32."""
    return 1e-4 if jax.default_backend() == "cpu" else 2e-3


def run_task(task: Task, steps: int, windows: int, every: list[Layout], compile_twin: bool = True) -> dict:
    """{layout label: {variant: {"steps_per_s", "flops_per_step", "first_loss"}}}; raises when the
    first losses disagree (fdl vs hand on 1 device, hand on a mesh vs hand on 1 device)."""
    reference = fdl.init_train_state(task.model, task.input_shape, task.fdl_optimizer, SEED)
    first = first_steps(task, reference, compile_twin)
    (fdl_loss, _), (hand_loss, _) = first["fdl"], first["hand"]
    if not math.isclose(fdl_loss, hand_loss, rel_tol=loss_tolerance()):
        raise AssertionError(f"{task.name}: the first step's loss differs — fdl {fdl_loss:.7f}, "
                             f"hand {hand_loss:.7f}: the two are not the same model")
    results = {}
    for layout in every:
        hand_seconds, hand_mesh_loss = time_hand(task, reference, windows, layout)
        if not math.isclose(hand_mesh_loss, hand_loss, rel_tol=loss_tolerance()):
            raise AssertionError(f"{task.name} {layout.label}: hand's first loss {hand_mesh_loss:.7f} differs "
                                 f"from its 1-device {hand_loss:.7f}: the sharded step is not the same step")
        seconds = {"hand": hand_seconds, "fdl": time_fdl(task, reference, windows, layout)}
        for variant, taken in seconds.items():
            print(f"{task.name} {layout.label} {variant}: windows of {steps} steps took "
                  f"{', '.join(f'{s:.2f}' for s in taken)} s", flush=True)
        results[layout.label] = {variant: {"steps_per_s": steps / min(seconds[variant]),
                                           "flops_per_step": first[variant][1], "first_loss": first[variant][0]}
                                 for variant in ("hand", "fdl")}
    return results


# ---- report ---------------------------------------------------------------------------------------

HEADER = (f"{'model':<10}{'layout':<10}{'variant':<9}{'batch':>6}{'steps/s':>10}{'GFLOP/step':>12}"
          f"{'GFLOP/s':>10}{'fdl/hand':>10}")


def report(results: dict, tasks: dict) -> list[str]:
    lines = [HEADER]
    verdicts = []
    for name, by_layout in results.items():
        for label, rows in by_layout.items():
            ratio = round(rows["fdl"]["steps_per_s"] / rows["hand"]["steps_per_s"], 3)  # judged as shown
            for variant in ("hand", "fdl"):
                row = rows[variant]
                gflop = row["flops_per_step"] / 1e9
                shown = f"{ratio:.3f}x" if variant == "fdl" else "-"
                lines.append(f"{name:<10}{label:<10}{variant:<9}{tasks[name].batch_size:>6}"
                             f"{row['steps_per_s']:>10.4f}{gflop:>12.3f}{gflop * row['steps_per_s']:>10.3f}"
                             f"{shown:>10}")
            verdicts.append(f"{'PASS' if ratio >= TARGET else 'FAIL'}  {name} {label}: fdl/hand {ratio:.3f} "
                            f"(target {TARGET:.2f})")
    return lines + [""] + verdicts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,gpt", help="comma-separated: resnet18, gpt")
    parser.add_argument("--steps", type=int, default=3, help="steps per window (fdl: per epoch)")
    parser.add_argument("--windows", type=int, default=3, help="timed windows; the best is shown")
    parser.add_argument("--devices", type=int, default=1,
                        help="N > 1: also data-parallel and FSDP rows on a mesh of N devices (simulated on a CPU)")
    parser.add_argument("--smoke", action="store_true",
                        help="width-reduced models, 2 steps, 1 window, the twin's FLOPs from its lowering")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.windows = 2, 1
    unknown = set(args.models.split(",")) - set(TASKS)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}; valid: {', '.join(TASKS)}")
    args.sizes = SMOKE if args.smoke else FULL
    uneven = [f"{name} {args.sizes[name]['batch']}" for name in args.models.split(",")
              if args.sizes[name]["batch"] % args.devices]
    if args.devices < 1 or uneven:
        parser.error(f"--devices: expected a number >= 1 that divides each model's batch, got {args.devices} "
                     f"(batches: {', '.join(uneven) or 'fine'})")
    return args


def simulate_devices(argv: list[str], devices: int) -> int:
    """Run this script again in a process whose CPU backend has `devices` devices (XLA reads the
    flag once, at start-up); its exit status."""
    if jax.default_backend() != "cpu" or SIMULATE in os.environ.get("XLA_FLAGS", ""):
        sys.exit(f"--devices {devices}: jax sees {jax.local_device_count()} {jax.default_backend()} device(s); "
                 f"run on a machine with {devices}, or ask for fewer")
    flags = f"{os.environ.get('XLA_FLAGS', '')} {SIMULATE}={devices}".strip()
    return subprocess.call([sys.executable, __file__, *argv], env={**os.environ, "XLA_FLAGS": flags})


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.devices > jax.local_device_count():
        sys.exit(simulate_devices(argv, args.devices))
    tasks = {name: TASKS[name](args.sizes[name], args.steps) for name in args.models.split(",")}
    every = layouts(args.devices)
    device = jax.devices()[0]
    print(f"== benchmark_scale: 1 device ({device.platform}: {device.device_kind})"
          + (f" and meshes of {args.devices}" if args.devices > 1 else "")
          + f", float32, {args.steps} steps a window, best of {args.windows}"
          + f"{' (smoke sizes)' if args.smoke else ''} ==")
    results = {}
    for name, task in tasks.items():
        start = time.perf_counter()
        results[name] = run_task(task, args.steps, args.windows, every, compile_twin=not args.smoke)
        first = results[name]["1 device"]
        print(f"{name}: first-step loss fdl {first['fdl']['first_loss']:.6f}, hand "
              f"{first['hand']['first_loss']:.6f}; {time.perf_counter() - start:.0f} s", flush=True)
    print("\n".join(report(results, tasks)))


if __name__ == "__main__":
    main()
