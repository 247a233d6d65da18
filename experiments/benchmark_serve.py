"""A bounded load test of `fdl serve`: requests/s and p50/p99 latency with and without request batching.

    python experiments/benchmark_serve.py              # the MNIST-1D MLP, 16 clients, 3000 requests a way, ~30 s
    python experiments/benchmark_serve.py --smoke      # seconds: 4 clients, 40 requests a way
    python experiments/benchmark_serve.py --run RUN_DIR --clients 32 --requests 5000

Trains configs/mnist1d_mlp.yaml for one epoch into a temporary folder (unless --run
names a run directory), then serves it in this process (`fdl.runs.serve.serving`,
uvicorn on a loopback port) two ways, one after the other:

  batching      max batch 64, a 3 ms window: concurrent requests share compiled calls
  no batching   max batch 1: one compiled call per request

`--clients` threads, each with its own keep-alive httpx connection, POST one
MNIST-1D test example per request (JSON) until `--requests` have been answered.
Prints, per way, requests/s (answered requests over the wall time), the median
and 99th-percentile latency of a request, the compiled calls the server made and
the examples per call, then the ratio of the two rates. Clients and server share
the machine (and the GIL): the figures are the server's on that machine, loaded.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAIN_OVERRIDES = ["training.epochs=1", "training.verbose=0", "output.tensorboard=false", "output.plots=false"]
WAYS = {"batching": {"max_batch": 64, "batch_window_ms": 3.0}, "no batching": {"max_batch": 1,
                                                                              "batch_window_ms": 0.0}}


def train_run(folder: Path, smoke: bool) -> Path:
    from fdl.config import load_config
    from fdl.runs import train_from_config

    overrides = TRAIN_OVERRIDES + ["data.limit_train=200"] * smoke + [f"output.dir={folder / 'mlp'}"]
    return train_from_config(load_config(ROOT / "configs" / "mnist1d_mlp.yaml", overrides)).run_dir.path


def load(url: str, examples: np.ndarray, clients: int, requests: int) -> tuple[float, list[float]]:
    """(wall seconds, each request's latency in seconds) of `requests` POSTs from `clients` threads."""
    import httpx

    bodies = [{"inputs": [row.tolist()]} for row in examples]
    latencies, lock, sent = [], threading.Lock(), iter(range(requests))

    def client():
        with httpx.Client(timeout=60) as session:
            while True:
                with lock:
                    index = next(sent, None)
                if index is None:
                    return
                started = time.perf_counter()
                reply = session.post(f"{url}/predict", json=bodies[index % len(bodies)])
                elapsed = time.perf_counter() - started
                if reply.status_code != 200:
                    raise RuntimeError(f"/predict answered {reply.status_code}: {reply.text}")
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if len(latencies) != requests:
        raise RuntimeError(f"{requests - len(latencies)} of {requests} requests failed (see the client errors above)")
    return wall, latencies


def measure(run_dir: Path, clients: int, requests: int) -> dict:
    """{way: {"rate", "p50_ms", "p99_ms", "calls", "per_call", "max_batch"}} for each of WAYS."""
    import httpx

    import fdl
    from fdl.runs.serve import make_app, serving

    examples = fdl.data.load("mnist1d").test.x[:256]
    results = {}
    for way, settings in WAYS.items():
        with serving(make_app(run_dir, **settings)) as url:
            load(url, examples, clients, 2 * clients)  # connections opened, first requests answered
            before = httpx.get(f"{url}/metadata").json()["batching"]
            wall, latencies = load(url, examples, clients, requests)
            after = httpx.get(f"{url}/metadata").json()["batching"]
        calls = after["calls"] - before["calls"]
        results[way] = {"rate": requests / wall, "p50_ms": 1e3 * np.percentile(latencies, 50),
                        "p99_ms": 1e3 * np.percentile(latencies, 99), "calls": calls,
                        "per_call": (after["examples"] - before["examples"]) / calls,
                        "max_batch": settings["max_batch"]}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run directory to serve (default: train the MNIST-1D MLP for an epoch)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3000, help="answered requests per way")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    clients, requests = (4, 40) if args.smoke else (args.clients, args.requests)
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(args.run) if args.run else train_run(Path(folder), args.smoke)
        results = measure(run_dir, clients, requests)
    print(f"fdl serve under load: {clients} clients, {requests} requests of 1 example a way, one process")
    print(f"{'way':<12} {'max batch':>9} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'calls':>7} "
          f"{'examples/call':>13}")
    for way, row in results.items():
        print(f"{way:<12} {row['max_batch']:>9} {row['rate']:>11.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['calls']:>7} {row['per_call']:>13.2f}")
    print(f"batching / no batching: {results['batching']['rate'] / results['no batching']['rate']:.2f}x requests/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
