"""Population throughput: P members of the MNIST-1D MLP trained at once vs hand-written JAX.

    python experiments/benchmark_population.py [--members 32] [--epochs 5] [--windows 3]
    python experiments/benchmark_population.py --smoke    # seconds: 2 members, 400 examples, 1 window

Measures model-steps/s (members x optimizer steps per second, compile excluded)
on the MNIST-1D MLP 40-100-100-10, batch 100, Adam 1e-3, for:

  fdl population [map]      fdl.population.Population(...).train, members one after another in one program
  fdl population [vmap]     ... all members vectorized
  fdl population [auto]     ... the default strategy
  hand vmapped scan         jit(vmap(epoch as lax.scan)) over P stacked parameter sets
  hand sequential scans     P models, each its own jit(lax.scan epoch) call per epoch
  hand sequential jit steps P models stepped one jit call per step

fdl runs without a validation split here, so both sides do the same work
(`--validate` adds fdl's per-epoch validation pass over 1000 examples per
member, which the hand-written loops do not have). Prints the target: fdl [auto] >= 0.95 x the faster of the hand vmapped scan and the
hand sequential scans.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fdl
from fdl import nn
from fdl.population import MemberSpec, Population

BATCH, LEARNING_RATE, WIDTHS = 100, 1e-3, (40, 100, 100, 10)
SMOKE_EXAMPLES = 400


def hand_init(key):
    params = []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        key, sub = jax.random.split(key)
        params.append({"w": jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in),
                       "b": jnp.zeros(fan_out)})
    return params


def hand_loss(params, x, y):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    logits = x @ params[-1]["w"] + params[-1]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


OPTIMIZER = optax.inject_hyperparams(optax.adam)(learning_rate=LEARNING_RATE)


def hand_step(params, opt_state, x, y):
    grads = jax.grad(hand_loss)(params, x, y)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def hand_epoch(params, opt_state, x, y, key, epoch):
    order = jax.random.permutation(jax.random.fold_in(key, epoch), x.shape[0])
    batches = order[: x.shape[0] // BATCH * BATCH].reshape(-1, BATCH)

    def body(carry, batch):
        return hand_step(*carry, x[batch], y[batch]), None

    (params, opt_state), _ = jax.lax.scan(body, (params, opt_state), batches)
    return params, opt_state


def epoch_timer(run_epoch, epochs: int):
    """A window function for a hand-written variant: seconds per epoch over `epochs` epochs."""
    counter = iter(range(1, 1 << 30))
    run_epoch(0)  # compile

    def window() -> float:
        start = time.perf_counter()
        for _ in range(epochs):
            run_epoch(next(counter))
        return (time.perf_counter() - start) / epochs

    return window


def hand_variants(x, y, members: int, epochs: int) -> dict:
    """Window functions of the three hand-written variants."""
    keys = jax.random.split(jax.random.key(0), members)
    params = [jax.jit(hand_init)(k) for k in keys]  # one compiled init, not op by op
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    vmapped = jax.jit(jax.vmap(hand_epoch, in_axes=(0, 0, None, None, 0, None)))
    box = {"p": stacked, "o": jax.vmap(OPTIMIZER.init)(stacked)}

    def vmapped_epoch(epoch):
        box["p"], box["o"] = vmapped(box["p"], box["o"], x, y, keys, epoch)
        jax.block_until_ready(box["p"])

    scanned = jax.jit(hand_epoch)
    state = [(p, OPTIMIZER.init(p)) for p in params]

    def sequential_epoch(epoch):
        for i in range(members):
            state[i] = scanned(*state[i], x, y, keys[i], epoch)
        jax.block_until_ready(state)

    stepped = jax.jit(lambda p, o, x, y, batches, i: hand_step(p, o, x[batches[i]], y[batches[i]]),
                      donate_argnums=(0, 1))
    order = jax.jit(lambda key, epoch: jax.random.permutation(jax.random.fold_in(key, epoch), x.shape[0])
                    [: x.shape[0] // BATCH * BATCH].reshape(-1, BATCH))
    stepped_state = [(p, OPTIMIZER.init(p)) for p in map(lambda t: jax.tree.map(jnp.copy, t), params)]

    def stepped_epoch(epoch):
        for i in range(members):
            batches = order(keys[i], epoch)
            p, o = stepped_state[i]
            for b in range(batches.shape[0]):
                p, o = stepped(p, o, x, y, batches, b)
            stepped_state[i] = (p, o)
        jax.block_until_ready(stepped_state)

    return {"hand vmapped scan": epoch_timer(vmapped_epoch, epochs),
            "hand sequential scans": epoch_timer(sequential_epoch, epochs),
            "hand sequential jit steps": epoch_timer(stepped_epoch, epochs)}


def fdl_variant(data, members: int, epochs: int, strategy: str, validate: bool, labels: dict):
    """A window function for one `fdl.population.Population` (it owns its compiled programs, so only
    the first `train` compiles): seconds per epoch of a `train` call of `epochs` epochs (its
    `wall_time_s`: the epochs and their bookkeeping, initialization excluded)."""
    model = nn.serial(nn.Dense(100), nn.Relu(), nn.Dense(100), nn.Relu(), nn.Dense(10))
    specs = [MemberSpec(seed, {"learning_rate": LEARNING_RATE}) for seed in range(members)]
    val = (data.test.x, data.test.y) if validate else None
    population = Population(model, optimizer={"name": "adam"}, batch_size=BATCH, strategy=strategy)
    run = functools.partial(population.train, data.train, val, members=specs, verbose=0)
    labels[strategy] = run(epochs=1).strategy  # compiles

    def window() -> float:
        return run(epochs=epochs).wall_time_s / epochs

    return window


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--examples", type=int, default=None,
                        help="train on the first N examples (default all)")
    parser.add_argument("--validate", action="store_true", help="include fdl's per-epoch validation")
    parser.add_argument("--smoke", action="store_true",
                        help=f"seconds: 2 members, {SMOKE_EXAMPLES} examples, 1 epoch per window, 1 window")
    args = parser.parse_args(argv)
    if args.smoke:
        args.members, args.epochs, args.windows, args.examples = 2, 1, 1, SMOKE_EXAMPLES
    data = fdl.data.load("mnist1d")
    if args.examples is not None:
        data = dataclasses.replace(data, train=fdl.data.Split(data.train.x[:args.examples],
                                                              data.train.y[:args.examples]))
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    steps_per_epoch = x.shape[0] // BATCH
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {len(jax.devices())} device(s); "
          f"{args.members} members, {steps_per_epoch} steps/epoch, median of {args.windows} windows")
    labels = {}
    variants = {f"fdl population [{strategy}]": fdl_variant(data, args.members, args.epochs, strategy,
                                                            args.validate, labels)
                for strategy in ("map", "vmap", "auto")}
    variants.update(hand_variants(x, y, args.members, args.epochs))
    # Round robin over the variants, so a change in machine load hits them all alike.
    times = {name: [] for name in variants}
    for _ in range(args.windows):
        for name, window in variants.items():
            times[name].append(window())
    seconds = {name: float(np.median(t)) for name, t in times.items()}
    rate = {name: args.members * steps_per_epoch / s for name, s in seconds.items()}
    best_hand = max(rate["hand vmapped scan"], rate["hand sequential scans"])
    print(f"{'variant':34s}{'model-steps/s':>15s}{'/ best hand scan':>18s}")
    for name, value in rate.items():
        print(f"{name:34s}{value:15.0f}{value / best_hand:17.2f}x")
    ratio = round(rate["fdl population [auto]"] / best_hand, 2)  # judged as shown
    print(f"auto strategy = {labels['auto']}; vmapped/sequential hand scans = "
          f"{rate['hand vmapped scan'] / rate['hand sequential scans']:.2f}; vmapped scan / sequential "
          f"jit steps = {rate['hand vmapped scan'] / rate['hand sequential jit steps']:.2f}")
    print(f"{'PASS' if ratio >= 0.95 else 'FAIL'}  fdl population [auto] >= 0.95 x best hand scan: {ratio:.2f}")


if __name__ == "__main__":
    main()
