"""Streaming a .npy bigger than you would load: fdl's NpyStream against Grain, one epoch of shuffled batches.

    python experiments/benchmark_grain.py            # 200k x 784 float32 (~600 MB) in a temp folder, ~1 min
    python experiments/benchmark_grain.py --smoke    # seconds: 4096 x 64

Each way reads one epoch of shuffled batches of `--batch-size` examples (features
float32 and int32 labels) from the same memory-mapped files, with nothing else
running (no training step, no device copy):

  NpyStream                  fdl.data.NpyStream.host_batches: each batch's rows in one sorted gather
  NpyStream, process 0 of 2  the same batches, only the first half of each batch's rows (rows=, what
                             each of two processes reads under fit(mesh="all"))
  Grain                      grain.MapDataset.source(rows).shuffle(seed).batch(B): a record per index
  Grain, process 0 of 2      .source(rows)[0::2].shuffle(seed).batch(B / 2), Grain's sharding by slice
  Grain, process 0 of 2, threads   the same through .to_iter_dataset(ReadOptions(num_threads=2))

Prints examples/s, MB/s (features + labels read) and batches/s of each, and each
way's batches/s as a ratio to NpyStream's whole batches. The file was just
written, so it is read from the page cache: the figures are the readers' own
cost, not the disk's. Without grain installed (`pip install grain`; fdl does not
depend on it) its rows are skipped with a note.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 0
SHARDS = 2  # processes in the sharded rows; each reads 1 / SHARDS of every batch


def write_files(folder: Path, examples: int, features: int) -> tuple[Path, Path]:
    """x.npy (examples, features) float32 and y.npy (examples,) int32, written in chunks (never whole in memory)."""
    rng = np.random.default_rng(SEED)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(examples, features))
    for start in range(0, examples, 16384):
        stop = min(start + 16384, examples)
        x[start:stop] = rng.standard_normal((stop - start, features), dtype=np.float32)
    x.flush()
    del x
    np.save(folder / "y.npy", rng.integers(0, 10, examples, dtype=np.int32))
    return folder / "x.npy", folder / "y.npy"


class Rows:
    """A Grain random-access source over the memory-mapped files: record i is (x[i], y[i])."""

    def __init__(self, x_path: Path, y_path: Path):
        self.x, self.y = np.load(x_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int):
        return np.asarray(self.x[index]), np.asarray(self.y[index])


def timed(make_batches) -> tuple[float, int, int, int]:
    """(seconds, batches, examples, bytes) of `make_batches()` (the epoch's order drawn) and iterating
    its (x, y) batches once."""
    started, count, examples, size = time.perf_counter(), 0, 0, 0
    for x, y in make_batches():
        count, examples, size = count + 1, examples + x.shape[0], size + x.nbytes + y.nbytes
    return time.perf_counter() - started, count, examples, size


def npy_ways(x_path: Path, y_path: Path, batch_size: int) -> dict:
    import jax

    from fdl.data import NpyStream

    stream, key = NpyStream(x_path, y_path), jax.random.key(SEED)
    return {"NpyStream": lambda: stream.host_batches(key, 0, batch_size),
            f"NpyStream, process 0 of {SHARDS}": lambda: stream.host_batches(
                key, 0, batch_size, rows=slice(0, batch_size // SHARDS))}


def grain_ways(x_path: Path, y_path: Path, batch_size: int) -> dict:
    """Grain's rows, or {} with a printed note when grain is not installed."""
    try:
        import grain
    except ImportError:
        print("grain: not installed (pip install grain) — its rows are skipped")
        return {}
    source = grain.MapDataset.source(Rows(x_path, y_path))
    shard = source[0::SHARDS].shuffle(SEED).batch(batch_size // SHARDS, drop_remainder=True)
    threads = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)
    return {"Grain": lambda: source.shuffle(SEED).batch(batch_size, drop_remainder=True),
            f"Grain, process 0 of {SHARDS}": lambda: shard,
            f"Grain, process 0 of {SHARDS}, threads": lambda: shard.to_iter_dataset(threads)}


def measure(examples: int, features: int, batch_size: int) -> dict:
    """Variant -> (seconds, batches, examples, bytes) of one epoch of each way, after one untimed batch
    (the epoch order's first draw, Grain's start-up)."""
    with tempfile.TemporaryDirectory() as folder:
        x_path, y_path = write_files(Path(folder), examples, features)
        ways = {**npy_ways(x_path, y_path, batch_size), **grain_ways(x_path, y_path, batch_size)}
        for make in ways.values():
            next(iter(make()))
        return {name: timed(make) for name, make in ways.items()}


def report(results: dict, examples: int, features: int, batch_size: int) -> None:
    print(f"one epoch of {examples} x {features} float32 (+ int32 labels), batches of {batch_size}, "
          f"{examples * (features + 1) * 4 / 1e6:.0f} MB")
    print(f"{'variant':38s} {'rows/batch':>10s} {'examples/s':>12s} {'MB/s':>9s} {'batches/s':>10s} {'x':>7s}")
    reference = results["NpyStream"][1] / results["NpyStream"][0]
    for name, (seconds, count, read, size) in results.items():
        print(f"{name:38s} {read // count:10d} {read / seconds:12.0f} {size / seconds / 1e6:9.1f} "
              f"{count / seconds:10.1f} {count / seconds / reference:6.2f}x")
    half = f"process 0 of {SHARDS}"
    if f"Grain, {half}" in results:
        best = max(results[f"Grain, {half}"][1] / results[f"Grain, {half}"][0],
                   results[f"Grain, {half}, threads"][1] / results[f"Grain, {half}, threads"][0])
        ours = results[f"NpyStream, {half}"][1] / results[f"NpyStream, {half}"][0]
        print(f"Grain / NpyStream, {half}: {best / ours:.2f}x batches/s (Grain's faster way)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--smoke", action="store_true", help="4096 x 64 examples: seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.examples, args.features = 4096, 64
    report(measure(args.examples, args.features, args.batch_size), args.examples, args.features, args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
