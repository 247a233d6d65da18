"""Training throughput of fdl's engine against hand-written JAX and Flax NNX, in one run.

For each model every variant trains the same network from the same initial
weights on the same device-resident data, in the same batch order (a fresh
`jax.random.permutation` per epoch, last partial batch dropped), with Adam at
learning rate 1e-3. The variants:

  fdl per-step    `fdl.train.epoch.make_step_epoch`: one jit call per step (`fit(fused=False)`)
  fdl fused       `jax.jit(fdl.make_train_epoch(...), donate_argnums=0)`: one call per
                  epoch (what `fit` runs by default)
  hand jit        the classic pure-JAX loop: a params dict, a jnp loss, `jax.jit(step,
                  donate_argnums=(0, 1))` gathering its batch from the device data by index
  hand scan       the same step fused over an epoch with `lax.scan`
  nnx jit         Flax NNX the documented way: `nnx.Optimizer(model, optax.adam(1e-3),
                  wrt=nnx.Param)` and `@nnx.jit train_step(model, optimizer, x, y)` fed
                  numpy batches from the host (MNIST-1D models only)

fdl's optimizer (`fdl.optim.make_optimizer`) injects its hyperparameters, so
the hand-written variants use `optax.inject_hyperparams(optax.adam)` to do the
same optimizer work; the "(plain adam)" rows use `optax.adam(1e-3)` and are for
information only — the targets compare against same-optimizer rows.

Models (float32): the MNIST-1D MLP 40-100-100-10 (batch 100, 4000 examples);
the MNIST-1D CNN (40, 1) -> 3 x [Conv1D 25 ch, stride 2, SAME, relu] (kernels
5, 3, 3) -> Dense 10 (batch 100), with fdl's Conv `implementation` "lax",
"patches" and "auto" and hand-written `lax.conv_general_dilated` and im2col
("patches") convolutions; a wide MLP 784-1024-1024-10 on 12800 random examples
(batch 256), whose achieved FLOP/s (3 x forward FLOPs per step) is compared
with a jitted 2048 x 2048 float32 matmul measured in the same run.

Method: each variant's first epoch compiles it (and its first step's loss must
match every other variant's, so all compute the same thing); its second epoch
sets how many epochs make a window (>= 0.5 s, or `--steps`). Then `--windows`
windows are timed round-robin across the variants (so a change in machine
load hits them all alike), each ending in `jax.block_until_ready`; the table
shows the median steps/s.

Run alone on the machine:
  python experiments/benchmark_engine.py
  python experiments/benchmark_engine.py --models mlp,cnn --windows 7 --json engine.json
  python experiments/benchmark_engine.py --windows 2 --steps 20   # a quick smoke test
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax
from mnist1d.data import get_dataset_args, make_dataset

import fdl
from fdl import nn
from fdl.nn.conv import Conv1D, default_implementation
from fdl.train.epoch import make_step_epoch
from fdl.train.state import data_key

SEED = 0
LEARNING_RATE = 1e-3
MIN_WINDOW_SECONDS = 0.5
MLP_WIDTHS = (40, 100, 100, 10)
CNN_CONVS = ((25, 5, 2), (25, 3, 2), (25, 3, 2))  # (features, kernel, stride), SAME padding
CNN_INPUT = (40, 1)
WIDE_WIDTHS = (784, 1024, 1024, 10)
WIDE_EXAMPLES = 12800
MATMUL_SIZE = 2048

# Variant families.
FDL_STEP, FDL_FUSED, NNX = "fdl per-step", "fdl fused", "nnx jit"
HAND_JIT, HAND_SCAN = "hand jit", "hand scan"

# The default-implementation variants the targets judge, and the rows the ratio columns divide by.
DEFAULT_IMPLEMENTATIONS = (None, "auto")
REFERENCE_IMPLEMENTATIONS = (None, "lax")


class Task(NamedTuple):
    """One model to benchmark, with everything every variant needs to build it."""

    name: str
    x: jax.Array  # (n, *input_shape) float32, on the device
    y: jax.Array  # (n,) int32 class labels, on the device
    batch_size: int
    fdl_models: dict  # fdl Conv implementation (None for MLPs) -> fdl Layer
    hand_logits: dict  # conv implementation (None for MLPs) -> logits(layers, x: (batch, ...))
    nnx_layers: Callable[[nnx.Rngs], list] | None  # NNX layers in order, or None: no NNX row
    nnx_over_fdl_target: float | None  # the "fdl >= k x NNX" target, if judged here
    flops_per_step: float | None  # fwd+bwd FLOPs of one step, for the FLOP/s target

    @property
    def steps_per_epoch(self) -> int:
        return self.x.shape[0] // self.batch_size


class Variant(NamedTuple):
    """A training loop: `run_epoch(carry, epoch) -> (carry, losses)`; losses[0] is the epoch's first."""

    label: str
    family: str
    implementation: str | None  # the conv implementation, None for MLPs
    same_optimizer: bool  # does the optimizer work fdl does: inject_hyperparams(adam)
    carry: Any
    run_epoch: Callable


# ---- hand-written models -------------------------------------------------------------

def mlp_logits(layers, x):
    """x: (batch, features) -> (batch, classes); relu between the dense layers."""
    for layer in layers[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def conv1d_lax(x, w, stride):
    """x: (batch, length, C), w: (kernel, C, F) -> (batch, ceil(length / stride), F), SAME."""
    return lax.conv_general_dilated(x, w, (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))


def conv1d_patches(x, w, stride):
    """`conv1d_lax` as im2col: SAME padding, one strided slice per tap, one contraction."""
    kernel, length = w.shape[0], x.shape[1]
    out = -(-length // stride)
    total = max((out - 1) * stride + kernel - length, 0)
    x = jnp.pad(x, ((0, 0), (total // 2, total - total // 2), (0, 0)))
    taps = [x[:, t:t + (out - 1) * stride + 1:stride] for t in range(kernel)]
    return jnp.einsum("bokc,kcf->bof", jnp.stack(taps, axis=2), w)


def cnn_logits(conv, layers, x):
    """x: (batch, 40, 1) -> (batch, classes) through the CNN_CONVS stack and a dense head."""
    for layer, (_, _, stride) in zip(layers[:-1], CNN_CONVS):
        x = jax.nn.relu(conv(x, layer["w"], stride) + layer["b"])
    return mlp_logits(layers[-1:], x.reshape(x.shape[0], -1))


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def epoch_order(order_key, epoch, num_examples: int, batch_size: int):
    """(num_batches, batch_size) example indices: a fresh permutation, last partial batch dropped."""
    num_batches = num_examples // batch_size
    permutation = jax.random.permutation(jax.random.fold_in(order_key, epoch), num_examples)
    return permutation[:num_batches * batch_size].reshape(num_batches, batch_size)


def layer_params(params) -> list:
    """fdl serial params {"dense_0": {"w", "b"}, "relu_1": {}, ...} -> [{"w", "b"}, ...] in order."""
    names = sorted(params, key=lambda name: int(name.rsplit("_", 1)[1]))
    return [dict(params[name]) for name in names if params[name]]


def copy_tree(tree):
    """Fresh buffers, so each variant can donate its own."""
    return jax.tree.map(jnp.array, tree)


# ---- fdl models ---------------------------------------------------------------------

def fdl_mlp(widths) -> fdl.nn.Layer:
    hidden = [layer for width in widths[1:-1] for layer in (nn.Dense(width), nn.Relu())]
    return nn.serial(*hidden, nn.Dense(widths[-1]))


def fdl_cnn(implementation: str) -> fdl.nn.Layer:
    convs = [layer for features, kernel, stride in CNN_CONVS
             for layer in (Conv1D(features, kernel, strides=stride, implementation=implementation),
                           nn.Relu())]
    return nn.serial(*convs, nn.Flatten(), nn.Dense(10))


def fdl_optimizer():
    return fdl.optim.make_optimizer("adam", learning_rate=LEARNING_RATE)


# ---- Flax NNX -------------------------------------------------------------------------

class NnxNet(nnx.Module):
    """relu(layer(x)) for every layer but the last, which sees x flattened per example."""

    def __init__(self, layers):
        self.layers = nnx.List(layers)

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x.reshape(x.shape[0], -1))


def nnx_mlp_layers(rngs):
    return [nnx.Linear(a, b, rngs=rngs) for a, b in zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])]


def nnx_cnn_layers(rngs):
    layers, channels, length = [], CNN_INPUT[-1], CNN_INPUT[0]
    for features, kernel, stride in CNN_CONVS:
        layers.append(nnx.Conv(channels, features, kernel_size=(kernel,), strides=(stride,),
                               padding="SAME", rngs=rngs))
        channels, length = features, -(-length // stride)
    return layers + [nnx.Linear(length * channels, 10, rngs=rngs)]


@nnx.jit
def nnx_train_step(model, optimizer, x, y):
    def loss_fn(model):
        return cross_entropy(model(x), y)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


# ---- the variants ---------------------------------------------------------------------

def fdl_step_variant(task: Task, implementation, model) -> Variant:
    optimizer = fdl_optimizer()
    step = fdl.make_train_step(model, fdl.losses.cross_entropy, optimizer)
    run = make_step_epoch(step, task.batch_size)

    def run_epoch(state, epoch):
        state, logs, _ = run(state, (task.x, task.y), epoch)
        return state, logs["loss"]

    state = fdl.init_train_state(model, task.x.shape[1:], optimizer, SEED)
    return Variant(with_implementation(FDL_STEP, implementation), FDL_STEP, implementation, True,
                   state, run_epoch)


def fdl_fused_variant(task: Task, implementation, model) -> Variant:
    optimizer = fdl_optimizer()
    step = fdl.make_train_step(model, fdl.losses.cross_entropy, optimizer)
    train_epoch = jax.jit(fdl.make_train_epoch(step, task.batch_size), donate_argnums=0)

    def run_epoch(state, epoch):
        state, logs, _ = train_epoch(state, (task.x, task.y), epoch)
        return state, logs["loss"]

    state = fdl.init_train_state(model, task.x.shape[1:], optimizer, SEED)
    return Variant(with_implementation(FDL_FUSED, implementation), FDL_FUSED, implementation, True,
                   state, run_epoch)


def hand_update(logits_fn, optimizer):
    """`update(params, opt_state, x, y) -> (params, opt_state, loss)` for one batch."""

    def update(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(logits_fn(p, x), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return update


def hand_jit_variant(task: Task, implementation, logits_fn, layers, order_key, *, plain: bool) -> Variant:
    optimizer = (optax.adam(LEARNING_RATE) if plain
                 else optax.inject_hyperparams(optax.adam)(learning_rate=LEARNING_RATE))
    update = hand_update(logits_fn, optimizer)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, x, y, indices, i):
        batch = indices[i]
        return update(params, opt_state, x[batch], y[batch])

    order = jax.jit(epoch_order, static_argnums=(2, 3))

    def run_epoch(carry, epoch):
        params, opt_state = carry
        indices = order(order_key, epoch, task.x.shape[0], task.batch_size)
        losses = []
        for i in range(indices.shape[0]):
            params, opt_state, loss = step(params, opt_state, task.x, task.y, indices, i)
            losses.append(loss)
        return (params, opt_state), losses

    label = with_implementation(HAND_JIT, implementation) + (" (plain adam)" if plain else "")
    params = copy_tree(layers)
    return Variant(label, HAND_JIT, implementation, not plain, (params, optimizer.init(params)),
                   run_epoch)


def hand_scan_variant(task: Task, implementation, logits_fn, layers, order_key) -> Variant:
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=LEARNING_RATE)
    update = hand_update(logits_fn, optimizer)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_epoch(params, opt_state, x, y, order_key, epoch):
        def body(carry, batch):
            params, opt_state, loss = update(*carry, x[batch], y[batch])
            return (params, opt_state), loss

        indices = epoch_order(order_key, epoch, x.shape[0], task.batch_size)
        return lax.scan(body, (params, opt_state), indices)

    def run_epoch(carry, epoch):
        return train_epoch(*carry, task.x, task.y, order_key, epoch)

    params = copy_tree(layers)
    return Variant(with_implementation(HAND_SCAN, implementation), HAND_SCAN, implementation, True,
                   (params, optimizer.init(params)), run_epoch)


def nnx_variant(task: Task, layers, order_key) -> Variant:
    model = NnxNet(task.nnx_layers(nnx.Rngs(SEED)))
    for module, layer in zip(model.layers, layers):
        module.kernel.value, module.bias.value = layer["w"], layer["b"]
    optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)
    order = jax.jit(epoch_order, static_argnums=(2, 3))
    x, y = np.asarray(task.x), np.asarray(task.y)

    def run_epoch(carry, epoch):
        model, optimizer = carry
        indices = np.asarray(order(order_key, epoch, x.shape[0], task.batch_size))
        return carry, [nnx_train_step(model, optimizer, x[batch], y[batch]) for batch in indices]

    return Variant(NNX, NNX, None, False, (model, optimizer), run_epoch)


def with_implementation(family: str, implementation) -> str:
    if implementation is None:
        return family
    if implementation == "auto":
        return f"{family} [auto={default_implementation()}]"
    return f"{family} [{implementation}]"


def build_variants(task: Task) -> list[Variant]:
    variants = []
    for implementation, model in task.fdl_models.items():
        variants.append(fdl_step_variant(task, implementation, model))
    for implementation, model in task.fdl_models.items():
        variants.append(fdl_fused_variant(task, implementation, model))
    # Every fdl model has the same initial params; the hand-written and NNX runs start from them.
    reference = fdl.init_train_state(next(iter(task.fdl_models.values())), task.x.shape[1:],
                                     fdl_optimizer(), SEED)
    layers, order_key = layer_params(reference.params), data_key(reference)
    for plain in (False, True):
        for implementation, logits_fn in task.hand_logits.items():
            variants.append(hand_jit_variant(task, implementation, logits_fn, layers, order_key,
                                             plain=plain))
    for implementation, logits_fn in task.hand_logits.items():
        variants.append(hand_scan_variant(task, implementation, logits_fn, layers, order_key))
    if task.nnx_layers is not None:
        variants.append(nnx_variant(task, layers, order_key))
    return variants


# ---- tasks --------------------------------------------------------------------------------

def mnist1d_arrays(input_shape):
    data = make_dataset(get_dataset_args())
    x = jnp.asarray(data["x"], jnp.float32).reshape(-1, *input_shape)
    return jax.device_put(x), jax.device_put(jnp.asarray(data["y"], jnp.int32))


def mlp_task() -> Task:
    x, y = mnist1d_arrays(MLP_WIDTHS[:1])
    return Task("mnist1d-mlp", x, y, 100, {None: fdl_mlp(MLP_WIDTHS)}, {None: mlp_logits},
                nnx_mlp_layers, nnx_over_fdl_target=4.0, flops_per_step=None)


def cnn_task() -> Task:
    x, y = mnist1d_arrays(CNN_INPUT)
    models = {implementation: fdl_cnn(implementation) for implementation in ("lax", "patches", "auto")}
    logits = {"lax": functools.partial(cnn_logits, conv1d_lax),
              "patches": functools.partial(cnn_logits, conv1d_patches)}
    return Task("mnist1d-cnn", x, y, 100, models, logits, nnx_cnn_layers, nnx_over_fdl_target=None,
                flops_per_step=None)


def wide_task() -> Task:
    x_key, y_key = jax.random.split(jax.random.key(SEED))
    x = jax.random.normal(x_key, (WIDE_EXAMPLES, WIDE_WIDTHS[0]), jnp.float32)
    y = jax.random.randint(y_key, (WIDE_EXAMPLES,), 0, WIDE_WIDTHS[-1], jnp.int32)
    batch_size = 256
    forward = 2 * batch_size * sum(a * b for a, b in zip(WIDE_WIDTHS[:-1], WIDE_WIDTHS[1:]))
    return Task("wide-mlp", x, y, batch_size, {None: fdl_mlp(WIDE_WIDTHS)}, {None: mlp_logits},
                None, nnx_over_fdl_target=None, flops_per_step=3.0 * forward)


TASKS = {"mlp": mlp_task, "cnn": cnn_task, "wide": wide_task}


# ---- timing -----------------------------------------------------------------------------------

def first_step_tolerance() -> float:
    """float32 summation order differs across variants; GPUs may run matmuls/convs in TF32."""
    return 1e-5 if jax.default_backend() == "cpu" else 2e-3


def check_first_losses(task: Task, first_losses: dict) -> None:
    """Raises AssertionError unless every variant's first-step loss is the same."""
    values = np.array(list(first_losses.values()))
    if not np.allclose(values, values[0], rtol=first_step_tolerance(), atol=0.0):
        table = ", ".join(f"{label}: {loss:.7f}" for label, loss in first_losses.items())
        raise AssertionError(f"{task.name}: the variants' first-step losses differ — {table}")


def epochs_per_window(steps: int | None, steps_per_epoch: int, epoch_seconds: float) -> int:
    """Whole epochs per window: enough for `steps` steps, or for MIN_WINDOW_SECONDS."""
    if steps is not None:
        return max(1, math.ceil(steps / steps_per_epoch))
    return max(1, math.ceil(MIN_WINDOW_SECONDS / epoch_seconds))


def time_epochs(variant: Variant, carry, first_epoch: int, epochs: int):
    """(carry, seconds) for `epochs` epochs from `first_epoch`, up to the device finishing."""
    start = time.perf_counter()
    for epoch in range(first_epoch, first_epoch + epochs):
        carry, losses = variant.run_epoch(carry, epoch)
    # The losses come out of each variant's last compiled call, so they wait for it to end.
    jax.block_until_ready(losses)
    return carry, time.perf_counter() - start


def measure(task: Task, variants: list[Variant], windows: int, steps: int | None) -> dict:
    """label -> {"first_step_loss", "epochs_per_window", "window_steps_per_s", "steps_per_s"}."""
    carries, results = {}, {}
    for variant in variants:
        carry, losses = variant.run_epoch(variant.carry, 0)  # compiles
        first_loss = float(losses[0])
        carries[variant.label], seconds = time_epochs(variant, carry, 1, 1)
        epochs = epochs_per_window(steps, task.steps_per_epoch, seconds)
        results[variant.label] = {"first_step_loss": first_loss, "epochs_per_window": epochs,
                                  "window_steps_per_s": []}
    check_first_losses(task, {label: r["first_step_loss"] for label, r in results.items()})
    next_epoch = 2
    for _ in range(windows):
        for variant in variants:  # round-robin, so load drift hits every variant alike
            result = results[variant.label]
            epochs = result["epochs_per_window"]
            carries[variant.label], seconds = time_epochs(variant, carries[variant.label], next_epoch, epochs)
            result["window_steps_per_s"].append(epochs * task.steps_per_epoch / seconds)
        next_epoch += max(r["epochs_per_window"] for r in results.values())
    for result in results.values():
        result["steps_per_s"] = statistics.median(result["window_steps_per_s"])
    return results


def matmul_flops_per_s(windows: int) -> float:
    """Median FLOP/s of a jitted (2048, 2048) @ (2048, 2048) float32 matmul."""
    a_key, b_key = jax.random.split(jax.random.key(SEED))
    a = jax.random.normal(a_key, (MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
    b = jax.random.normal(b_key, (MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))  # compiles
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    calls = max(1, math.ceil(MIN_WINDOW_SECONDS / (time.perf_counter() - start)))
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        jax.block_until_ready([matmul(a, b) for _ in range(calls)])
        rates.append(calls * 2 * MATMUL_SIZE ** 3 / (time.perf_counter() - start))
    return statistics.median(rates)


# ---- targets and report --------------------------------------------------------------------

class Target(NamedTuple):
    model: str
    name: str
    ratio: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.ratio >= self.threshold


def fastest(variants: list[Variant], results: dict, keep: Callable[[Variant], bool]) -> Variant:
    return max((v for v in variants if keep(v)), key=lambda v: results[v.label]["steps_per_s"])


def the_variant(variants: list[Variant], family: str, implementations) -> Variant:
    """The same-optimizer variant of `family` with the first matching implementation."""
    return next(v for v in variants if v.family == family and v.same_optimizer
                and v.implementation in implementations)


def targets(task: Task, variants: list[Variant], results: dict, matmul: float | None) -> list[Target]:
    rate = lambda variant: results[variant.label]["steps_per_s"]
    fdl_step = the_variant(variants, FDL_STEP, DEFAULT_IMPLEMENTATIONS)
    fdl_fused = the_variant(variants, FDL_FUSED, DEFAULT_IMPLEMENTATIONS)
    best_jit = fastest(variants, results, lambda v: v.family == HAND_JIT and v.same_optimizer)
    best_hand = fastest(variants, results, lambda v: v.family in (HAND_JIT, HAND_SCAN) and v.same_optimizer)
    found = [Target(task.name, f"{fdl_step.label} >= 0.95 x best {best_jit.label}",
                    rate(fdl_step) / rate(best_jit), 0.95),
             Target(task.name, f"{fdl_fused.label} >= 0.95 x fastest hand-written ({best_hand.label})",
                    rate(fdl_fused) / rate(best_hand), 0.95)]
    if task.nnx_over_fdl_target is not None:
        nnx_row = next(v for v in variants if v.family == NNX)
        found.append(Target(task.name, f"{fdl_fused.label} >= {task.nnx_over_fdl_target:g} x {NNX}",
                            rate(fdl_fused) / rate(nnx_row), task.nnx_over_fdl_target))
    if task.flops_per_step is not None:
        found.append(Target(task.name, f"{fdl_fused.label} FLOP/s >= 0.75 x matmul FLOP/s",
                            rate(fdl_fused) * task.flops_per_step / matmul, 0.75))
    return found


def print_table(task: Task, variants: list[Variant], results: dict) -> None:
    jit_row = the_variant(variants, HAND_JIT, REFERENCE_IMPLEMENTATIONS)
    scan_row = the_variant(variants, HAND_SCAN, REFERENCE_IMPLEMENTATIONS)
    first_loss = results[jit_row.label]["first_step_loss"]
    print(f"\n== {task.name}: {task.x.shape[0]} examples, batch {task.batch_size}, "
          f"{task.steps_per_epoch} steps/epoch; first-step loss {first_loss:.6f} in every variant ==")
    flops = task.flops_per_step is not None
    print(f"{'variant':38s} {'steps/s':>10s} {'/ ' + jit_row.label:>18s} {'/ ' + scan_row.label:>18s}"
          + (f" {'TFLOP/s':>8s}" if flops else ""))
    for variant in variants:
        rate = results[variant.label]["steps_per_s"]
        line = (f"{variant.label:38s} {rate:10.1f} {rate / results[jit_row.label]['steps_per_s']:17.2f}x"
                f" {rate / results[scan_row.label]['steps_per_s']:17.2f}x")
        print(line + (f" {rate * task.flops_per_step / 1e12:8.3f}" if flops else ""))


def print_targets(found: list[Target]) -> None:
    print("\n== targets ==")
    for target in found:
        print(f"{'PASS' if target.passed else 'FAIL'}  {target.model:12s} {target.name}: {target.ratio:.2f}")


def environment() -> dict:
    device = jax.devices()[0]
    return {"jax": jax.__version__, "backend": jax.default_backend(), "device": device.device_kind,
            "device_count": jax.device_count()}


def run(models: list[str], windows: int, steps: int | None) -> dict:
    report = {**environment(), "windows": windows, "steps": steps, "models": {}, "targets": []}
    all_targets = []
    print(f"jax {report['jax']}, backend {report['backend']}, device {report['device']} "
          f"(x{report['device_count']}); {windows} windows of "
          f"{f'{steps} steps' if steps else f'>= {MIN_WINDOW_SECONDS} s'}, median steps/s")
    for name in models:
        task = TASKS[name]()
        variants = build_variants(task)
        results = measure(task, variants, windows, steps)
        matmul = matmul_flops_per_s(windows) if task.flops_per_step is not None else None
        print_table(task, variants, results)
        if matmul is not None:
            print(f"jitted {MATMUL_SIZE}x{MATMUL_SIZE} float32 matmul: {matmul / 1e12:.3f} TFLOP/s")
        found = targets(task, variants, results, matmul)
        report["models"][task.name] = {
            "batch_size": task.batch_size, "examples": task.x.shape[0],
            "steps_per_epoch": task.steps_per_epoch, "flops_per_step": task.flops_per_step,
            "matmul_flops_per_s": matmul,
            "variants": [{"label": v.label, "family": v.family, "implementation": v.implementation,
                          "same_optimizer": v.same_optimizer, **results[v.label]} for v in variants]}
        all_targets += found
    print_targets(all_targets)
    report["targets"] = [{**t._asdict(), "passed": t.passed} for t in all_targets]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,cnn,wide",
                        help=f"comma-separated, from {','.join(TASKS)} (default: all)")
    parser.add_argument("--windows", type=int, default=7, help="timed windows per variant (default 7)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per window, rounded up to whole epochs "
                             f"(default: enough epochs for >= {MIN_WINDOW_SECONDS} s)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args()
    models = args.models.split(",")
    unknown = [m for m in models if m not in TASKS]
    if unknown:
        parser.error(f"--models: unknown {unknown}, choose from {list(TASKS)}")
    if args.windows < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--windows and --steps must be >= 1")
    report = run(models, args.windows, args.steps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
