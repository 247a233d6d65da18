"""Compile time vs depth: GPT blocks stacked with `nn.repeat` (one scanned block) vs unrolled `serial`.

    python experiments/benchmark_depth.py [--depths 4 32] [--width 64] [--repeats 1]
                                          [--program train_step|blocks] [--smoke]

For each depth and stacking, builds `fdl.nn.models.gpt(..., scan_layers=True|False)`,
makes one training step with `fdl.train.make_train_step` (next-token cross-entropy, Adam,
a batch of token sequences) and times `jax.jit(step).lower(...)` (tracing and lowering)
and `.compile()` (XLA) on abstract inputs (`jax.eval_shape`: nothing is initialized or
run). `--program blocks` times the gradient of a bare stack of `TransformerDecoderBlock`s
instead (`nn.repeat(block, depth)` vs `nn.serial(*[block] * depth)`), without the
embeddings, the engine and the optimizer. Each build starts from cleared jax caches; with
`--repeats R` each figure is the fastest of R builds, taken round robin. Prints one row per
(depth, stack) and the ratios: how much the deepest stack costs over the shallowest for
each stacking, and serial over repeat at the deepest. `--smoke` (alias `--quick`) is the
run of seconds: the blocks program at depths 1 and 2, tiny sizes.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from fdl import batched, losses, nn
from fdl.nn.models import gpt
from fdl.train import init_train_state, make_train_step

STACKS = ("repeat", "serial")


def next_token_loss(logits, targets):
    """Mean cross-entropy over one sequence's positions: logits (length, vocab), targets (length,)."""
    return jnp.mean(losses.cross_entropy(logits, targets))


def train_step_program(args, depth: int, stack: str):
    """(jitted GPT training step, its abstract arguments)."""
    model = gpt(args.vocab, args.context, args.width, depth, args.heads,
                scan_layers=stack == "repeat")
    optimizer = optax.adam(1e-3)
    state = jax.eval_shape(lambda: init_train_state(model, (args.context,), optimizer, 0))
    tokens = jax.ShapeDtypeStruct((args.batch, args.context), jnp.int32)
    return jax.jit(make_train_step(model, next_token_loss, optimizer)), (state, (tokens, tokens))


def blocks_program(args, depth: int, stack: str):
    """(jitted gradient of a stack of decoder blocks, its abstract arguments)."""
    block = nn.TransformerDecoderBlock(args.heads, 4 * args.width, dropout_rate=0.0)
    model = nn.repeat(block, depth) if stack == "repeat" else nn.serial(*[block] * depth)
    shape = (args.context, args.width)
    params, state = jax.eval_shape(lambda: model.init(jax.random.key(0), shape)[1:])
    x = jax.ShapeDtypeStruct((args.batch, *shape), jnp.float32)

    def loss(params, x):
        return jnp.mean(jnp.square(batched(model)(params, state, x)[0]))

    return jax.jit(jax.grad(loss)), (params, x)


PROGRAMS = {"train_step": train_step_program, "blocks": blocks_program}


def compile_seconds(args, depth: int, stack: str) -> tuple[float, float]:
    """(lower seconds, compile seconds) of the program, built from scratch."""
    program, arguments = PROGRAMS[args.program](args, depth, stack)
    jax.clear_caches()  # jax keeps compiled programs in memory: a repeat build would hit that cache
    start = time.perf_counter()
    lowered = program.lower(*arguments)
    lowered_at = time.perf_counter()
    lowered.compile()
    return lowered_at - start, time.perf_counter() - lowered_at


def measure(args) -> dict[tuple[int, str], tuple[float, float]]:
    """The fastest of `args.repeats` builds per (depth, stack), round robin so load drifts hit all."""
    best: dict[tuple[int, str], tuple[float, float]] = {}
    for _ in range(args.repeats):
        for depth in args.depths:
            for stack in STACKS:
                lower, compile_ = compile_seconds(args, depth, stack)
                previous = best.get((depth, stack))
                if previous is None or lower + compile_ < sum(previous):
                    best[(depth, stack)] = (lower, compile_)
    return best


def report(args, best) -> str:
    what = "one GPT training step" if args.program == "train_step" else "the gradient of a block stack"
    sizes = f"width {args.width}, heads {args.heads}, context {args.context}, batch {args.batch}"
    if args.program == "train_step":
        sizes += f", vocab {args.vocab}, Adam"
    lines = [f"compile time of {what} (jit lower + compile): {sizes}, backend "
             f"{jax.default_backend()}, best of {args.repeats}",
             f"{'depth':>5}  {'stack':<6}  {'lower_s':>8}  {'compile_s':>9}  {'total_s':>8}"]
    for (depth, stack), (lower, compile_) in sorted(best.items()):
        lines.append(f"{depth:>5}  {stack:<6}  {lower:>8.3f}  {compile_:>9.3f}  {lower + compile_:>8.3f}")
    shallow, deep = min(args.depths), max(args.depths)
    total = {key: sum(value) for key, value in best.items()}
    growth = [f"{stack} {total[(deep, stack)] / total[(shallow, stack)]:.2f}x" for stack in STACKS]
    lines.append(f"ratio {deep} vs {shallow} blocks: {', '.join(growth)}; at {deep} blocks serial/repeat "
                 f"{total[(deep, 'serial')] / total[(deep, 'repeat')]:.2f}x")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 32], help="block counts to compare")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=64, help="tokens per sequence")
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="fresh builds per figure (the fastest is kept)")
    parser.add_argument("--program", choices=sorted(PROGRAMS), default="train_step",
                        help="what is compiled: the GPT training step or a bare stack of blocks")
    parser.add_argument("--smoke", "--quick", dest="smoke", action="store_true",
                        help="seconds: the blocks program at depths 1 and 2, tiny sizes")
    args = parser.parse_args(argv)
    if args.smoke:
        args.depths, args.width, args.heads, args.context, args.vocab, args.batch = [1, 2], 4, 1, 2, 8, 1
        args.program, args.repeats = "blocks", 1
    if len(set(args.depths)) < 2:
        parser.error("--depths needs at least two different block counts")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    print(report(args, measure(args)), flush=True)


if __name__ == "__main__":
    main()
