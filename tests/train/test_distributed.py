"""Many hosts (fdl.train.distributed): 2 processes of 2 CPU devices train as 1 process of 4 devices.

The processes are real subprocesses on 127.0.0.1 (jax.distributed with gloo
collectives); each prints its final params as JSON.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fdl.train.distributed import initialize

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    coordinator, processes, process_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if processes > 1:
        from fdl.train.distributed import initialize
        initialize(coordinator, processes, process_id, timeout_s=60)
    import jax, fdl
    from fdl import nn
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    model = nn.serial(nn.Dense(16), nn.BatchNorm(), nn.Relu(), nn.Dense(2))
    state, history = fdl.fit(model, (x, y), val=(x[:40], y[:40]), epochs=2, batch_size=16, verbose=0, seed=1,
                             metrics=["accuracy"], optimizer={"name": "sgd", "learning_rate": 0.1}, mesh="all")
    print(json.dumps({"devices": jax.device_count(), "local": jax.local_device_count(),
                      "val_loss": history["val_loss"],
                      "params": [np.asarray(leaf).ravel().tolist() for leaf in jax.tree.leaves(state.params)]}))
""")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(processes: int, devices_each: int, port: int):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices_each}")
    return [subprocess.Popen([sys.executable, "-c", SCRIPT, f"127.0.0.1:{port}", str(processes), str(i)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]


def results(popens):
    out = []
    for process in popens:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_two_processes_of_two_devices_train_as_one_process_of_four():
    port = free_port()
    hosts = launch(2, 2, port) + launch(1, 4, free_port())  # the three processes at once
    first, second, single = results(hosts)
    assert (first["devices"], first["local"], single["devices"]) == (4, 2, 4)
    for run in (first, second):
        np.testing.assert_allclose(run["val_loss"], single["val_loss"], rtol=1e-5)
        for a, b in zip(run["params"], single["params"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_coordinator_that_does_not_answer_is_named_with_the_timeout():
    port = free_port()
    with pytest.raises(ConnectionError, match=rf"^coordinator 127.0.0.1:{port}: no answer within 0.5 s to "
                                              r"process 1 of 2 — start process 0 there first"):
        initialize(f"127.0.0.1:{port}", 2, 1, timeout_s=0.5)
    with pytest.raises(ValueError, match=r"^coordinator: expected HOST:PORT"):
        initialize("localhost", 2, 1)
    with pytest.raises(ValueError, match=r"^process_id: expected an int in \[0, 2\)"):
        initialize("127.0.0.1:1", 2, 2)
