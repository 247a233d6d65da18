"""Training throughput of `fdl.fit` against the data-in-place limit and hand-written JAX, in one run.

For each model every variant trains the same network from the same initial
weights (fdl's) on the same device-resident data with the same Adam step
(learning rate 1e-3, hyperparameters injected as fdl's optimizer does), last
partial batch dropped; the hand-written variants draw a fresh
`jax.random.permutation` per epoch inside their program, fdl its own order. The
variants:

  data in place     the LIMIT: `lax.scan` of the Adam step over batches cut once
                    before timing, an array (steps, batch, ...) already on the
                    device — no shuffle and no gather inside the program
  hand scan         a hand-written `lax.scan` epoch that shuffles on the device and
                    gathers x[idx] per step (the careful engineer's epoch)
  hand jit          the classic pure-JAX loop: `jax.jit(step, donate_argnums=(0, 1))`,
                    one call per step, gathering its batch from the device data by index
  fdl fit           `fdl.fit(model, (x, y), loss="cross_entropy")`, the default path (one
                    fused `lax.scan` per epoch), timed from fit's own history (`time_s`)
  fdl fit objective `fdl.fit(..., objective=fdl.objectives.supervised("cross_entropy"))`
  fdl fit per-step  `fdl.fit(..., fused=False)`: one compiled call per step
  nnx jit           Flax NNX the documented way: `nnx.Optimizer(model, optax.adam(1e-3),
                    wrt=nnx.Param)` and `@nnx.jit train_step` fed numpy batches from
                    the host (MNIST-1D models only; plain `optax.adam`)

A "fdl fit" window is one `fit(state=..., epochs=done + E + 2)` call resumed
from the state the last window left, and sums the `time_s` of its epochs 2 to E + 1
— the throughput a user calling `fdl.fit` gets, epoch bookkeeping included. Its
first epoch compiles (fit builds its program per call) and is dropped; fit queues
epoch k + 1 before it reads epoch k, so epoch k's `time_s` (arrival to arrival)
holds the device work of epoch k or, where a dispatch runs inline, of epoch k + 1:
either way epochs 2 to E + 1 hold E epochs of work, and the last epoch (nothing
queued behind it) is dropped too. Every other window times E epochs up to
`jax.block_until_ready`.

Models (float32): the MNIST-1D MLP 40-100-100-10 (`fdl.nn.models.mlp`, batch 100,
4000 examples) and CNN (`fdl.nn.models.cnn1d`: 3 x [Conv1D 25 ch, stride 2, SAME,
relu], kernels 5, 3, 3, then Dense 10; batch 100), the models of
configs/mnist1d_{mlp,cnn}.yaml; fdl's CNN uses its default `implementation="auto"`, the
hand-written variants both `lax.conv_general_dilated` and im2col ("patches"). A wide
MLP 784-1024-1024-10 on 12800 random examples (batch 256) compares achieved FLOP/s
(3 x forward FLOPs per step) with a jitted 2048 x 2048 float32 matmul.

Method: each variant's first epoch compiles it; the first-epoch mean losses must agree
(to float32 rounding among the hand-written variants, which share an order, and among
the fdl ones; to 10% between the two, whose orders differ), so all compute the same
thing. A second epoch sets
how many epochs make a window (>= 0.5 s, or `--steps`). Then `--windows` windows
are timed round-robin across the variants (so a change in machine load hits them
all alike); the table shows the best window's steps/s (best of N) and each row's
ratio to the limit and to its hand-written equivalent. Targets (issue 12): fdl fit
>= 0.95 x data in place; objective= >= 0.98 x loss=; fdl fit >= 0.95 x hand scan;
fdl per-step >= 0.95 x hand jit (same conv implementation).

Run alone on the machine:
  python experiments/benchmark_engine.py                       # mlp, cnn, wide; 7 windows
  python experiments/benchmark_engine.py --models mlp,cnn --windows 7 --json engine.json
  python experiments/benchmark_engine.py --smoke               # seconds: the mlp, 400 examples, 1 window
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

import fdl
from fdl.nn.conv import default_implementation

SEED = 0
LEARNING_RATE = 1e-3
MIN_WINDOW_SECONDS = 0.5
BATCH_SIZE = 100
MLP_HIDDEN = (100, 100)
CNN_CONVS = ((25, 5, 2), (25, 3, 2), (25, 3, 2))  # (features, kernel, stride), SAME padding
FEATURES, CLASSES = 40, 10
WIDE_HIDDEN, WIDE_FEATURES, WIDE_EXAMPLES, WIDE_BATCH = (1024, 1024), 784, 12800, 256
MATMUL_SIZE = 2048
SMOKE_EXAMPLES = 400  # 4 steps per epoch

# Variant families, in table order.
IN_PLACE, HAND_SCAN, HAND_JIT = "data in place", "hand scan", "hand jit"
FIT, FIT_OBJECTIVE, FIT_STEP = "fdl fit", "fdl fit objective", "fdl fit per-step"
NNX = "nnx jit"
FDL_FAMILIES = (FIT, FIT_OBJECTIVE, FIT_STEP)  # fdl's data order; the others share the hand-written one

# Target rows: (name, family, reference family, threshold); the reference is the same conv
# implementation's row, or — for the limit — the fastest data-in-place form.
TARGETS = ((f"{FIT} >= 0.95 x {IN_PLACE}", FIT, IN_PLACE, 0.95),
           (f"{FIT_OBJECTIVE} >= 0.98 x {FIT} (loss=)", FIT_OBJECTIVE, FIT, 0.98),
           (f"{FIT} >= 0.95 x {HAND_SCAN}", FIT, HAND_SCAN, 0.95),
           (f"{FIT_STEP} >= 0.95 x {HAND_JIT}", FIT_STEP, HAND_JIT, 0.95))
# What each row's "x ref" column divides by (the hand-written equivalent).
REFERENCE = {HAND_SCAN: IN_PLACE, HAND_JIT: HAND_SCAN, FIT: HAND_SCAN, FIT_OBJECTIVE: FIT,
             FIT_STEP: HAND_JIT, NNX: HAND_JIT}


class Task(NamedTuple):
    """One model to benchmark, with everything every variant needs to build it."""

    name: str
    x: jax.Array  # (n, features) float32, on the device
    y: jax.Array  # (n,) int32 class labels, on the device
    batch_size: int
    model: fdl.nn.Layer  # fdl's model (its default conv implementation)
    implementation: str | None  # what fdl's "auto" conv means here; None for MLPs
    hand_logits: dict  # conv implementation (None for MLPs) -> logits(layers, x: (batch, features))
    nnx_layers: Callable[[nnx.Rngs], list] | None  # NNX layers in order, or None: no NNX row
    nnx_input: tuple  # the per-example shape NNX's first layer takes
    nnx_over_fdl_target: float | None  # the "fdl >= k x NNX" target, if judged here
    flops_per_step: float | None  # fwd+bwd FLOPs of one step, for the FLOP/s target

    @property
    def steps_per_epoch(self) -> int:
        return self.x.shape[0] // self.batch_size


class Variant(NamedTuple):
    """A training loop being timed.

    `warm_up() -> (first epoch's mean loss, seconds of one steady epoch)` compiles it;
    `window(epochs) -> seconds` trains `epochs` more epochs, compile excluded.
    """

    label: str
    family: str
    implementation: str | None  # the conv implementation, None for MLPs
    warm_up: Callable[[], tuple[float, float]]
    window: Callable[[int], float]


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
    """x: (batch, 40) -> (batch, classes) through the CNN_CONVS stack and a dense head."""
    x = x[..., None]
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
    """fdl serial params {"flatten_0": {}, "dense_1": {"w", "b"}, ...} -> [{"w", "b"}, ...] in order."""
    names = sorted(params, key=lambda name: int(name.rsplit("_", 1)[1]))
    return [dict(params[name]) for name in names if params[name]]


@jax.jit
def copy_tree(tree):
    """Fresh buffers, so each variant can donate its own (one compiled call, not one per leaf)."""
    return jax.tree.map(jnp.copy, tree)


FDL_OPTIMIZER = fdl.optim.make_optimizer("adam", learning_rate=LEARNING_RATE)
# The optimizer work fdl's does: Adam with its learning rate injected as an array.
HAND_OPTIMIZER = optax.inject_hyperparams(optax.adam)(learning_rate=LEARNING_RATE)


@jax.jit
def hand_carry(layers):
    """(params, opt_state) of a hand-written variant: fresh copies of `layers` and Adam's state."""
    params = jax.tree.map(jnp.copy, layers)
    return params, HAND_OPTIMIZER.init(params)


# ---- Flax NNX -------------------------------------------------------------------------

class NnxNet(nnx.Module):
    """relu(layer(x)) for every layer but the last, which sees x flattened per example."""

    def __init__(self, layers, input_shape):
        self.layers, self.input_shape = nnx.List(layers), tuple(input_shape)

    def __call__(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x.reshape(x.shape[0], -1))


def nnx_mlp_layers(rngs):
    widths = (FEATURES, *MLP_HIDDEN, CLASSES)
    return [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]


def nnx_cnn_layers(rngs):
    layers, channels, length = [], 1, FEATURES
    for features, kernel, stride in CNN_CONVS:
        layers.append(nnx.Conv(channels, features, kernel_size=(kernel,), strides=(stride,),
                               padding="SAME", rngs=rngs))
        channels, length = features, -(-length // stride)
    return layers + [nnx.Linear(length * channels, CLASSES, rngs=rngs)]


@nnx.jit
def nnx_train_step(model, optimizer, x, y):
    def loss_fn(model):
        return cross_entropy(model(x), y)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


# ---- the variants ---------------------------------------------------------------------

def epoch_variant(label: str, family: str, implementation, carry, run_epoch) -> Variant:
    """A Variant over `run_epoch(carry, epoch) -> (carry, losses)`, losses: (steps,) or a list."""
    box = {"carry": carry, "epoch": 0}

    def run(epochs: int):
        start = time.perf_counter()
        for _ in range(epochs):
            box["carry"], losses = run_epoch(box["carry"], box["epoch"])
            box["epoch"] += 1
        # The losses come out of each variant's last compiled call, so they wait for it to end.
        jax.block_until_ready(losses)
        return time.perf_counter() - start, losses

    def warm_up():
        _, losses = run(1)  # compiles
        return float(np.mean(jax.device_get(losses))), run(1)[0]

    return Variant(label, family, implementation, warm_up, lambda epochs: run(epochs)[0])


def fit_variant(task: Task, reference: fdl.TrainState, label: str, family: str, **fit_arguments) -> Variant:
    """A Variant over `fdl.fit` itself, each window one resumed fit call (see the docstring)."""
    box = {"state": copy_tree(reference), "epochs": 0}

    def fit_epochs(epochs: int) -> list:
        box["state"], history = fdl.fit(task.model, (task.x, task.y), state=box["state"],
                                        optimizer=FDL_OPTIMIZER, epochs=box["epochs"] + epochs,
                                        batch_size=task.batch_size, seed=SEED, placement="device",
                                        verbose=0, **fit_arguments)
        box["epochs"] += epochs
        return history

    def warm_up():
        history = fit_epochs(3)  # the first epoch compiles; see the docstring for why 3
        return history[0]["loss"], history[1]["time_s"]

    def window(epochs: int) -> float:
        return sum(row["time_s"] for row in fit_epochs(epochs + 2)[1:epochs + 1])

    return Variant(label, family, task.implementation, warm_up, window)


def hand_update(logits_fn, optimizer):
    """`update(params, opt_state, x, y) -> (params, opt_state, loss)` for one batch."""

    def update(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(logits_fn(p, x), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return update


def scan_epoch(update, batches, carry):
    """`lax.scan` of `update` over `batches` (a pytree with a leading steps axis)."""

    def body(carry, batch):
        params, opt_state, loss = update(*carry, *batch)
        return (params, opt_state), loss

    return lax.scan(body, carry, batches)


def data_in_place_variant(task: Task, implementation, logits_fn, layers, order_key) -> Variant:
    update = hand_update(logits_fn, HAND_OPTIMIZER)
    # Cut once, outside the timing: epoch 0's batches, so the first epoch matches every other variant's.
    indices = epoch_order(order_key, 0, task.x.shape[0], task.batch_size)
    batches = jax.block_until_ready((task.x[indices], task.y[indices]))  # (steps, batch, ...)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_epoch(params, opt_state, batches):
        return scan_epoch(update, batches, (params, opt_state))

    def run_epoch(carry, epoch):
        del epoch  # the same batches every epoch: the limit does no shuffling
        return train_epoch(*carry, batches)

    return epoch_variant(with_implementation(IN_PLACE, implementation), IN_PLACE, implementation,
                         hand_carry(layers), run_epoch)


def hand_scan_variant(task: Task, implementation, logits_fn, layers, order_key) -> Variant:
    update = hand_update(logits_fn, HAND_OPTIMIZER)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_epoch(params, opt_state, x, y, order_key, epoch):
        indices = epoch_order(order_key, epoch, x.shape[0], task.batch_size)
        return scan_epoch(lambda p, o, rows: update(p, o, x[rows], y[rows]), (indices,), (params, opt_state))

    def run_epoch(carry, epoch):
        return train_epoch(*carry, task.x, task.y, order_key, epoch)

    return epoch_variant(with_implementation(HAND_SCAN, implementation), HAND_SCAN, implementation,
                         hand_carry(layers), run_epoch)


def hand_jit_variant(task: Task, implementation, logits_fn, layers, order_key) -> Variant:
    update = hand_update(logits_fn, HAND_OPTIMIZER)

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

    return epoch_variant(with_implementation(HAND_JIT, implementation), HAND_JIT, implementation,
                         hand_carry(layers), run_epoch)


def nnx_variant(task: Task, layers, order_key) -> Variant:
    # Built abstractly (no initializer runs op by op), then given fdl's initial weights.
    model = nnx.eval_shape(lambda: NnxNet(task.nnx_layers(nnx.Rngs(SEED)), task.nnx_input))
    for module, layer in zip(model.layers, copy_tree(layers)):
        module.kernel.value, module.bias.value = layer["w"], layer["b"]
    optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)
    order = jax.jit(epoch_order, static_argnums=(2, 3))
    x, y = np.asarray(task.x), np.asarray(task.y)

    def run_epoch(carry, epoch):
        model, optimizer = carry
        indices = np.asarray(order(order_key, epoch, x.shape[0], task.batch_size))
        return carry, [nnx_train_step(model, optimizer, x[batch], y[batch]) for batch in indices]

    return epoch_variant(NNX, NNX, None, (model, optimizer), run_epoch)


def with_implementation(family: str, implementation) -> str:
    return family if implementation is None else f"{family} [{implementation}]"


def build_variants(task: Task) -> list[Variant]:
    # Every variant starts from fdl's initial params; the hand-written ones share their own order.
    reference = fdl.init_train_state(task.model, task.x.shape[1:], FDL_OPTIMIZER, SEED)
    layers, order_key = layer_params(reference.params), jax.random.PRNGKey(SEED)
    variants = []
    for build in (data_in_place_variant, hand_scan_variant, hand_jit_variant):
        for implementation, logits_fn in task.hand_logits.items():
            variants.append(build(task, implementation, logits_fn, layers, order_key))
    auto = task.implementation
    variants += [
        fit_variant(task, reference, with_implementation(FIT, auto), FIT, loss="cross_entropy"),
        fit_variant(task, reference, with_implementation(FIT_OBJECTIVE, auto), FIT_OBJECTIVE,
                    objective=fdl.objectives.supervised("cross_entropy")),
        fit_variant(task, reference, with_implementation(FIT_STEP, auto), FIT_STEP, loss="cross_entropy",
                    fused=False)]
    if task.nnx_layers is not None:
        variants.append(nnx_variant(task, layers, order_key))
    return variants


# ---- tasks --------------------------------------------------------------------------------

def mnist1d_arrays(examples: int | None):
    train = fdl.data.load("mnist1d").train
    x, y = train.x[:examples], train.y[:examples]
    return jax.device_put(jnp.asarray(x, jnp.float32)), jax.device_put(jnp.asarray(y, jnp.int32))


def mlp_task(examples: int | None) -> Task:
    x, y = mnist1d_arrays(examples)
    return Task("mnist1d-mlp", x, y, BATCH_SIZE, fdl.nn.models.mlp(MLP_HIDDEN), None, {None: mlp_logits},
                nnx_mlp_layers, (FEATURES,), nnx_over_fdl_target=4.0, flops_per_step=None)


def cnn_task(examples: int | None) -> Task:
    x, y = mnist1d_arrays(examples)
    features, kernels, stride = CNN_CONVS[0][0], [k for _, k, _ in CNN_CONVS], CNN_CONVS[0][2]
    model = fdl.nn.models.cnn1d(features, kernels, stride)  # implementation="auto"
    logits = {"lax": functools.partial(cnn_logits, conv1d_lax),
              "patches": functools.partial(cnn_logits, conv1d_patches)}
    return Task("mnist1d-cnn", x, y, BATCH_SIZE, model, default_implementation(), logits, nnx_cnn_layers,
                (FEATURES, 1), nnx_over_fdl_target=None, flops_per_step=None)


def wide_task(examples: int | None) -> Task:
    examples = examples or WIDE_EXAMPLES
    x_key, y_key = jax.random.split(jax.random.key(SEED))
    x = jax.random.normal(x_key, (examples, WIDE_FEATURES), jnp.float32)
    y = jax.random.randint(y_key, (examples,), 0, CLASSES, jnp.int32)
    widths = (WIDE_FEATURES, *WIDE_HIDDEN, CLASSES)
    forward = 2 * WIDE_BATCH * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    return Task("wide-mlp", x, y, WIDE_BATCH, fdl.nn.models.mlp(WIDE_HIDDEN), None, {None: mlp_logits},
                None, (), nnx_over_fdl_target=None, flops_per_step=3.0 * forward)


TASKS = {"mlp": mlp_task, "cnn": cnn_task, "wide": wide_task}


# ---- timing -----------------------------------------------------------------------------------

def first_epoch_tolerance() -> float:
    """float32 summation order differs across variants; GPUs may run matmuls/convs in TF32."""
    return 1e-4 if jax.default_backend() == "cpu" else 2e-3


ACROSS_ORDERS_TOLERANCE = 0.1  # the same model and step over other batches: close, not equal


def check_first_losses(task: Task, variants: list[Variant], first_losses: dict) -> None:
    """Raises AssertionError unless the variants' first-epoch mean losses agree (see the docstring)."""
    groups = [[first_losses[v.label] for v in variants if (v.family in FDL_FAMILIES) == fdl_order]
              for fdl_order in (False, True)]
    within = all(np.allclose(group, group[0], rtol=first_epoch_tolerance(), atol=0.0) for group in groups)
    if not within or not np.isclose(groups[0][0], groups[1][0], rtol=ACROSS_ORDERS_TOLERANCE, atol=0.0):
        table = ", ".join(f"{label}: {loss:.7f}" for label, loss in first_losses.items())
        raise AssertionError(f"{task.name}: the variants' first-epoch mean losses differ — {table}")


def epochs_per_window(steps: int | None, steps_per_epoch: int, epoch_seconds: float) -> int:
    """Whole epochs per window: enough for `steps` steps, or for MIN_WINDOW_SECONDS."""
    if steps is not None:
        return max(1, math.ceil(steps / steps_per_epoch))
    return max(1, math.ceil(MIN_WINDOW_SECONDS / epoch_seconds))


def measure(task: Task, variants: list[Variant], windows: int, steps: int | None) -> dict:
    """label -> {"first_epoch_loss", "epochs_per_window", "window_steps_per_s", "steps_per_s",
    "median_steps_per_s"}; steps_per_s is the best window's."""
    results = {}
    for variant in variants:
        first_loss, seconds = variant.warm_up()
        results[variant.label] = {"first_epoch_loss": first_loss, "window_steps_per_s": [],
                                  "epochs_per_window": epochs_per_window(steps, task.steps_per_epoch, seconds)}
    check_first_losses(task, variants, {label: r["first_epoch_loss"] for label, r in results.items()})
    for _ in range(windows):
        for variant in variants:  # round-robin, so load drift hits every variant alike
            result = results[variant.label]
            seconds = variant.window(result["epochs_per_window"])
            result["window_steps_per_s"].append(result["epochs_per_window"] * task.steps_per_epoch / seconds)
    for result in results.values():
        result["steps_per_s"] = max(result["window_steps_per_s"])
        result["median_steps_per_s"] = statistics.median(result["window_steps_per_s"])
    return results


def matmul_flops_per_s(windows: int) -> float:
    """Best-of-`windows` FLOP/s of a jitted (2048, 2048) @ (2048, 2048) float32 matmul."""
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
    return max(rates)


# ---- targets and report --------------------------------------------------------------------

class Target(NamedTuple):
    model: str
    name: str
    ratio: float
    threshold: float

    @property
    def passed(self) -> bool:
        return round(self.ratio, 3) >= self.threshold  # the figure shown, 3 decimals


def reference_row(variants: list[Variant], results: dict, variant: Variant, family: str) -> Variant:
    """The `family` row to divide `variant` by: the same conv implementation when that family has it,
    else (and always for the limit) the family's fastest row."""
    rows = [v for v in variants if v.family == family]
    same = [v for v in rows if v.implementation == variant.implementation]
    if same and family != IN_PLACE:
        return same[0]
    return max(rows, key=lambda v: results[v.label]["steps_per_s"])


def the_row(variants: list[Variant], family: str) -> Variant:
    return next(v for v in variants if v.family == family)


def targets(task: Task, variants: list[Variant], results: dict, matmul: float | None) -> list[Target]:
    rate = lambda variant: results[variant.label]["steps_per_s"]  # noqa: E731
    found = []
    for name, family, reference_family, threshold in TARGETS:
        row = the_row(variants, family)
        reference = reference_row(variants, results, row, reference_family)
        found.append(Target(task.name, f"{name} ({row.label} / {reference.label})",
                            rate(row) / rate(reference), threshold))
    fit_row = the_row(variants, FIT)
    if task.nnx_over_fdl_target is not None:
        found.append(Target(task.name, f"{fit_row.label} >= {task.nnx_over_fdl_target:g} x {NNX}",
                            rate(fit_row) / rate(the_row(variants, NNX)), task.nnx_over_fdl_target))
    if task.flops_per_step is not None:
        found.append(Target(task.name, f"{fit_row.label} FLOP/s >= 0.75 x matmul FLOP/s",
                            rate(fit_row) * task.flops_per_step / matmul, 0.75))
    return found


def target_for(variant: Variant) -> str:
    """The issue's targets for this row, printed beside its ratios ("-" when none)."""
    found = [f">= {threshold:.2f} x {'limit' if reference == IN_PLACE else 'ref'}"
             for _, family, reference, threshold in TARGETS if family == variant.family]
    return "; ".join(found) or "-"


def print_table(task: Task, variants: list[Variant], results: dict) -> None:
    rate = lambda variant: results[variant.label]["steps_per_s"]  # noqa: E731
    limit = reference_row(variants, results, variants[0], IN_PLACE)
    print(f"\n== {task.name}: {task.x.shape[0]} examples, batch {task.batch_size}, "
          f"{task.steps_per_epoch} steps/epoch; first-epoch mean loss "
          f"{results[limit.label]['first_epoch_loss']:.6f} (hand-written order); limit = {limit.label} ==")
    flops = task.flops_per_step is not None
    print(f"{'variant':34s} {'steps/s':>10s} {'x limit':>8s}  {'reference':34s} {'x ref':>6s}  target"
          + (f" {'TFLOP/s':>8s}" if flops else ""))
    for variant in variants:
        if variant.family in REFERENCE:
            reference = reference_row(variants, results, variant, REFERENCE[variant.family])
            ref_label, ref_ratio = reference.label, f"{rate(variant) / rate(reference):5.2f}x"
        else:
            ref_label, ref_ratio = "-", "-"
        line = (f"{variant.label:34s} {rate(variant):10.1f} {rate(variant) / rate(limit):7.2f}x  "
                f"{ref_label:34s} {ref_ratio:>6s}  {target_for(variant)}")
        print(line + (f" {rate(variant) * task.flops_per_step / 1e12:8.3f}" if flops else ""))


def print_targets(found: list[Target]) -> None:
    print("\n== targets ==")
    for target in found:
        print(f"{'PASS' if target.passed else 'FAIL'}  {target.model:12s} {target.name}: "
              f"{target.ratio:.3f} (target {target.threshold:g})")


def environment() -> dict:
    device = jax.devices()[0]
    return {"jax": jax.__version__, "backend": jax.default_backend(), "device": device.device_kind,
            "device_count": jax.device_count()}


def run(models: list[str], windows: int, steps: int | None, examples: int | None = None) -> dict:
    report = {**environment(), "windows": windows, "steps": steps, "models": {}, "targets": []}
    all_targets = []
    print(f"jax {report['jax']}, backend {report['backend']}, device {report['device']} "
          f"(x{report['device_count']}); {windows} windows of "
          f"{f'{steps} steps' if steps else f'>= {MIN_WINDOW_SECONDS} s'}, best window's steps/s")
    for name in models:
        task = TASKS[name](examples)
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
                          **results[v.label]} for v in variants]}
        all_targets += found
    print_targets(all_targets)
    report["targets"] = [{**t._asdict(), "passed": t.passed} for t in all_targets]
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None,
                        help=f"comma-separated, from {','.join(TASKS)} (default: all; mlp with --smoke)")
    parser.add_argument("--windows", type=int, default=7, help="timed windows per variant (default 7)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per window, rounded up to whole epochs "
                             f"(default: enough epochs for >= {MIN_WINDOW_SECONDS} s)")
    parser.add_argument("--examples", type=int, default=None,
                        help="train on the first N examples (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    parser.add_argument("--smoke", action="store_true",
                        help=f"seconds, not minutes: {SMOKE_EXAMPLES} examples, 1 window of 1 epoch "
                             "(the mlp unless --models)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.windows, args.examples = args.models or "mlp", 1, SMOKE_EXAMPLES
        args.steps = SMOKE_EXAMPLES // BATCH_SIZE
    models = (args.models or ",".join(TASKS)).split(",")
    unknown = [m for m in models if m not in TASKS]
    if unknown:
        parser.error(f"--models: unknown {unknown}, choose from {list(TASKS)}")
    if args.windows < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--windows and --steps must be >= 1")
    report = run(models, args.windows, args.steps, args.examples)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
