"""Over several processes each one reads only its rows of every batch (the host-streaming path).

Two real processes on 127.0.0.1 (jax.distributed, 2 simulated CPU devices each)
train from .npy files, through an NpyStream and through memory-mapped arrays
with placement="host"; the reference is one process with 4 devices on the same
stream (SGD: only the float rounding of the split sums differs). Every
process counts the rows it reads from the features' memory map.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from fdl.data import NpyStream, Prefetcher, batch_indices

N, FEATURES, BATCH, EPOCHS = 96, 6, 16, 2

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from fdl.train import distributed

    folder, num_processes, process_id, coordinator = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if num_processes > 1:
        distributed.initialize(coordinator, num_processes, process_id, timeout_s=60)
    import jax
    from jax.sharding import Mesh
    import fdl
    from fdl import nn
    from fdl.data import NpyStream
    from fdl.train.mesh import examples_sharding, host_copy, place_process_rows, process_rows

    class CountedReads(np.memmap):
        reads = []  # the rows of every read of the file (an array index: a batch's rows)

        def __getitem__(self, index):
            if isinstance(index, np.ndarray):
                CountedReads.reads.append(sorted(index.tolist()))
            return super().__getitem__(index)

    def model():
        return nn.serial(nn.Dense(8), nn.BatchNorm(), nn.Relu(), nn.Dense(3))

    common = dict(mesh="all", epochs=2, batch_size=16, seed=4, verbose=0,
                  optimizer={"name": "sgd", "learning_rate": 0.1})
    out = {}
    stream = NpyStream(f"{folder}/x.npy", f"{folder}/y.npy")
    stream.x = stream.x.view(CountedReads)
    state, _ = fdl.fit(model(), stream, **common)
    out["stream"] = {"params": [a.tolist() for a in jax.tree.leaves(host_copy(state.params))],
                     "reads": CountedReads.reads}
    out["key"] = np.asarray(host_copy(state.rng)).tolist()
    if num_processes > 1:
        CountedReads.reads = []
        x = np.load(f"{folder}/x.npy", mmap_mode="r").view(CountedReads)
        state, _ = fdl.fit(model(), (x, np.load(f"{folder}/y.npy")), placement="host", **common)
        out["memmap"] = {"params": [a.tolist() for a in jax.tree.leaves(host_copy(state.params))],
                         "reads": CountedReads.reads}
        # a mesh whose devices alternate between the processes: each holds two blocks of a batch
        mine = [d for d in jax.devices() if d.process_index == process_id]
        other = [d for d in jax.devices() if d.process_index != process_id]
        order = [mine[0], other[0], mine[1], other[1]] if process_id == 0 else [other[0], mine[0], other[1], mine[1]]
        sharding = examples_sharding(Mesh(np.array(order), ("data",)))
        rows = process_rows(sharding, 8)
        batch = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
        placed = place_process_rows(batch[rows], sharding, 8)
        out["interleaved"] = {"rows": np.arange(8)[rows].tolist(), "shape": list(placed.shape),
                              "shards": all(np.array_equal(np.asarray(s.data), batch[s.index])
                                            for s in placed.addressable_shards)}
    print(json.dumps(out))
""")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(folder, devices: int, num_processes: int, process_id: int, coordinator: str) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(folder), str(num_processes), str(process_id),
                             coordinator], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """[process 0, process 1] of the 2-process job and the 1-process 4-device run: their printed JSON."""
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", (x[:, 0] > x[:, 1]).astype(np.int32) + (x[:, 2] > 1))
    coordinator = f"127.0.0.1:{free_port()}"
    started = [launch(folder, 2, 2, i, coordinator) for i in range(2)] + [launch(folder, 4, 1, 0, "")]
    results = []
    for popen in started:
        stdout, stderr = popen.communicate(timeout=300)
        assert popen.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def epoch_blocks(key, rows: slice) -> set[tuple[int, ...]]:
    """Every batch of both epochs, in the shared order, cut to `rows`: sorted row tuples."""
    key = np.asarray(key, np.uint32)
    return {tuple(sorted(batch[rows].tolist())) for epoch in range(EPOCHS)
            for batch in np.asarray(batch_indices(key, epoch, N, BATCH))}


def test_two_processes_train_as_one_process_of_four_devices(runs):
    *hosts, single = runs
    for process in hosts:
        for path in ("stream", "memmap"):
            for a, b in zip(process[path]["params"], single["stream"]["params"]):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=path)


@pytest.mark.parametrize("path", ["stream", "memmap"])
def test_each_process_reads_only_its_half_of_every_batch(runs, path):
    for process_id, process in enumerate(runs[:2]):
        reads = {tuple(rows) for rows in process[path]["reads"]}
        half = slice(process_id * BATCH // 2, (process_id + 1) * BATCH // 2)  # its devices' rows: a mesh in order
        assert reads == epoch_blocks(process["key"], half), f"process {process_id}"
        assert len(reads) == EPOCHS * (N // BATCH) and {len(rows) for rows in reads} == {BATCH // 2}


def test_one_process_reads_whole_batches_in_the_shared_order(runs):
    single = runs[2]
    assert {tuple(rows) for rows in single["stream"]["reads"]} == epoch_blocks(single["key"], slice(None))


def test_a_mesh_alternating_between_processes_gives_each_its_blocks(runs):
    assert [process["interleaved"]["rows"] for process in runs[:2]] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert all(process["interleaved"]["shape"] == [8, 3] and process["interleaved"]["shards"]
               for process in runs[:2])


def test_rows_of_a_partial_last_batch_and_two_placements_are_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 2), np.float32))
    stream = NpyStream(tmp_path / "x.npy")
    with pytest.raises(ValueError, match=r"x.npy: rows= reads a share of every full batch.*use drop_last=True"):
        stream.host_batches(jax.random.key(0), 0, 4, drop_last=False, rows=slice(0, 2))
    with pytest.raises(ValueError, match=r"Prefetcher: device=.* and place= both say where batches go"):
        Prefetcher([], device=jax.devices()[0], place=jax.device_put)
