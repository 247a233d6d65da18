"""Data parallelism (fit(mesh=...)): N simulated CPU devices give one device's numbers.

The multi-device runs live in one subprocess (XLA_FLAGS must be set before jax
starts), which prints its measurements as JSON; the assertions are here.
"""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.train.mesh import data_mesh
from jax.sharding import Mesh

SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np, fdl
    from fdl import nn
    from fdl.train.placement import device_epochs
    from fdl.train.step import make_train_step

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    models = {
        "mlp_batchnorm": lambda: nn.serial(nn.Dense(16), nn.BatchNorm(), nn.Relu(), nn.Dropout(0.1), nn.Dense(2)),
        "cnn": lambda: nn.serial(nn.Reshape((12, 1)), nn.Conv1D(4, 3, strides=2), nn.Relu(), nn.Flatten(),
                                 nn.Dense(2)),
    }
    common = dict(val=(x[:40], y[:40]), epochs=2, batch_size=16, verbose=0, seed=1, metrics=["accuracy", "f1"],
                  optimizer={"name": "sgd", "learning_rate": 0.1})
    model_axis = {"mesh": fdl.train.mesh.data_mesh(4, model=2)}  # 2 (data) x 2 (model)
    RUNS = {"mlp_batchnorm": [(2, "fused", {}), (4, "fused", {}), (4, "stepped", {"fused": False}),
                              (4, "host", {"placement": "host"}), (4, "fsdp", {"shard_params": "fsdp"}),
                              (4, "model", model_axis), (4, "model-fsdp", {**model_axis, "shard_params": "fsdp"})],
            "cnn": [(4, "fused", {}), (4, "fsdp-stepped", {"shard_params": "fsdp", "fused": False})]}
    out = {}
    for name, model in models.items():
        reference, history = fdl.fit(model(), (x, y), **common)
        for devices, label, path in RUNS[name]:
            state, sharded = fdl.fit(model(), (x, y), **{"mesh": devices, **common, **path})
            label = f"{name} {devices} {label}"
            out[label] = {
                "params": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                              for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params))),
                "model_state": max([0.0] + [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
                                    zip(jax.tree.leaves(state.model_state), jax.tree.leaves(reference.model_state))]),
                "logs": max(abs(a[k] - b[k]) for a, b in zip(sharded, history)
                            for k in ("loss", "accuracy", "val_loss", "val_accuracy", "val_f1")),
                "devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
                "replicated": all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state)),
                "shards": [[list(leaf.shape), list(leaf.addressable_shards[0].data.shape)]
                           for leaf in jax.tree.leaves((state.params, state.opt_state))],
                "specs": sorted({str(leaf.sharding.spec) for leaf in jax.tree.leaves(state.params)}),
            }
    # the batches really are split: each device holds 16 / 4 rows of every batch, and the step all-reduces
    model, tx = models["mlp_batchnorm"](), fdl.optim.make_optimizer("sgd", learning_rate=0.1)
    step = make_train_step(model, fdl.losses.cross_entropy, tx)
    epochs = device_epochs(step, 16, (), True, (x, y), mesh=fdl.train.mesh.data_mesh(4))
    (batches,) = epochs._feed(fdl.init_train_state(model, (12,), tx, 0), 0)
    out["shard_shape"] = list(jax.tree.leaves(batches)[0].addressable_shards[0].data.shape)
    try:
        fdl.fit(models["cnn"](), (x, y), mesh=4, batch_size=18, epochs=1, verbose=0)
    except ValueError as error:
        out["error"] = str(error)
    print(json.dumps(out))
""")


def devices_env(count: int) -> dict:
    """The environment of a subprocess with `count` simulated CPU devices, the session's XLA flags kept."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)


@pytest.fixture(scope="module")
def measured():
    env = devices_env(4)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model, runs", [("mlp_batchnorm", ("2 fused", "4 fused", "4 stepped", "4 host", "4 fsdp",
                                                           "4 model", "4 model-fsdp")),
                                         ("cnn", ("4 fused", "4 fsdp-stepped"))])
def test_n_devices_train_one_devices_numbers_on_every_path(measured, model, runs):
    expected, runs = runs, {label: run for label, run in measured.items() if label.startswith(model + " ")}
    assert sorted(runs) == sorted(f"{model} {run}" for run in expected)
    for label, run in runs.items():
        # float rounding only: the batch sums are split over the devices (SGD; Adam would amplify
        # the rounding of near-zero gradients to ~learning-rate differences)
        assert run["params"] < 1e-5 and run["model_state"] < 1e-5 and run["logs"] < 1e-5, (label, run)
        assert run["devices"] == int(label.split()[1]), (label, run)
        fsdp, model_axis = "fsdp" in label, "model" in label
        assert run["replicated"] is not (fsdp or model_axis), (label, run)
        for shape, shard in run["shards"]:
            if model_axis:  # halved over "model" along an axis 2 divides; with fsdp halved again over "data"
                even = sum(size % 2 == 0 for size in shape)
                split = 2 ** min(even, 2 if fsdp else 1)
            else:  # FSDP over 4 devices: a quarter of every array 4 divides along some axis
                split = 4 if fsdp and any(size % 4 == 0 for size in shape) else 1
            assert np.prod(shard) == np.prod(shape) // split, (label, shape, shard)
        if model_axis:  # every Dense kernel and bias is split over "model"
            assert all("model" in spec for spec in run["specs"]), (label, run["specs"])


def test_the_batches_are_split_over_the_devices_and_a_batch_size_that_does_not_split_is_named(measured):
    assert measured["shard_shape"] == [6, 4, 12]  # (96 // 16 steps, 16 / 4 rows, features) on device 0
    assert measured["error"] == ("batch_size: 18 examples do not split over 4 devices — use a multiple of 4, "
                                 "e.g. 16 or 20")


def test_a_mesh_needs_a_data_axis_and_existing_devices():
    with pytest.raises(ValueError, match=r"devices: expected 'all' or an int in \[1, \d+\]"):
        data_mesh(10_000)
    with pytest.raises(ValueError, match=r"^model: expected a number of devices that divides the 1 devices \(1\)"):
        data_mesh(1, model=2)
    with pytest.raises(ValueError, match="mesh: expected an axis named 'data'"):
        fdl.fit(nn.Dense(2), (np.zeros((8, 3), np.float32), np.zeros(8, np.int32)), batch_size=4, verbose=0,
                mesh=Mesh(np.array(jax.devices()[:1]), ("model",)))


def test_fdl_train_devices_trains_data_parallel_and_a_bad_count_names_the_key(tmp_path):
    from fdl.config.arguments import build_mesh
    from fdl.config.load import ConfigError

    with pytest.raises(ConfigError, match=r"^training\.devices: expected 'all' or an int in \[1, \d+\]"):
        build_mesh(10_000)
    with pytest.raises(ConfigError, match=r"^training\.model_axis: expected a number of devices that divides"):
        build_mesh(1, model_axis=3)
    with pytest.raises(ConfigError, match=r"^training\.model_axis: 2 splits the state over devices — set "
                                          r"training\.devices"):
        build_mesh(None, model_axis=2)
    env = devices_env(2)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fdl_command = os.path.join(os.path.dirname(sys.executable), "fdl")  # the installed command
    command = [fdl_command, "train", os.path.join(root, "configs", "mnist1d_mlp.yaml"),
               "--out", str(tmp_path / "run"), "--devices", "2", "--quiet", "--set", "training.epochs=1",
               "--set", "data.limit_train=400", "--set", "output.plots=false", "--set", "output.tensorboard=false"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices: 2" in (tmp_path / "run" / "config.yaml").read_text()
    (line,) = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert 0.0 <= json.loads(line)["val_accuracy"] <= 1.0
