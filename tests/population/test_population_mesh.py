"""Populations on a ("population", "data") mesh: each member's batch split over "data" gives fit's numbers.

The 4-device runs live in one subprocess (XLA_FLAGS must be set before jax starts), which prints
its measurements as JSON; the assertions are here. SGD, so the only differences are float
rounding of the split sums (Adam would amplify the rounding of near-zero gradients).
"""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from fdl import nn
from fdl.config import ConfigError
from fdl.config.arguments import build_population_mesh
from fdl.population import MemberSpec, Population, train_population
from fdl.population.members import population_mesh

SCRIPT = textwrap.dedent("""
    import json, re
    import jax, numpy as np, fdl
    from jax.sharding import Mesh
    from fdl import nn
    from fdl.population.members import MemberSpec, Population

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    train, val = (x, y), (x[:24], y[:24])
    model = lambda: nn.serial(nn.Dense(8), nn.BatchNorm(), nn.Relu(), nn.Dense(2))
    members = [MemberSpec(1, {"learning_rate": 0.1}), MemberSpec(2, {"learning_rate": 0.05})]
    common = dict(loss="cross_entropy", optimizer={"name": "sgd"}, batch_size=16, metrics=["accuracy"])
    LOGS = ("loss", "accuracy", "val_loss", "val_accuracy")

    def gap(a, b):
        return max([0.0] + [float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
                            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))])

    def spy(population):
        # the epoch program's arguments as train placed them, to read their shardings and the compiled HLO
        key, (init, epoch_fn, label) = next(iter(population._programs.items()))
        calls = []
        population._programs[key] = (init, lambda *args: calls.append(args) or epoch_fn(*args), label)
        return epoch_fn, calls

    out, results = {}, {}
    for label, mesh in (("2x2", 2), ("1d", None)):
        population = Population(model(), mesh=mesh, **common)
        results[label] = population.train(train, val, members=members, epochs=2, verbose=0)
        epoch_fn, calls = spy(population)
        population.train(train, val, members=members, epochs=1, verbose=0)  # one epoch more, its arguments kept
        (states, active, data, rows, val_batches), = calls
        hlo = epoch_fn.lower(states, active, data, rows, val_batches).compile().as_text()
        out[label] = {"mesh": dict(population.mesh.shape), "rows_spec": str(rows.sharding.spec),
                      "rows_shard": list(rows.addressable_shards[0].data.shape),
                      "all_reduces": [re.search(r"replica_groups=(\\S+?\\]|\\{[{}\\d,]*\\}),", line).group(1)
                                      for line in hlo.splitlines() if " all-reduce(" in line]}
    for i, member in enumerate(members):
        state, history = fdl.fit(model(), train, val=val, seed=member.seed, epochs=2, verbose=0,
                                 **{**common, "optimizer": {"name": "sgd", **member.hyperparams}})
        for label, result in results.items():
            mine = jax.tree.map(lambda a: a[i], result.states)
            out[f"{label} {i}"] = {
                "params": gap(mine.params, state.params), "model_state": gap(mine.model_state, state.model_state),
                "logs": max(abs(h[k] - history[k][e]) for e, h in enumerate(result.histories[i]) for k in LOGS)}
    errors = []
    for arguments in ({"mesh": 3}, {"mesh": 2, "batch_size": 15},
                      {"mesh": Mesh(np.array(jax.devices()).reshape(2, 2), ("population", "model"))}):
        try:
            Population(model(), **{**common, **arguments})
        except ValueError as error:
            errors.append(str(error))
    from fdl.config.arguments import build_population_mesh
    try:
        build_population_mesh(2, batch_size=15)  # a sweep's training.devices: 2
    except ValueError as error:
        errors.append(str(error))
    out["errors"] = errors
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def measured():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("label", ["2x2", "1d"])
def test_each_member_on_a_mesh_equals_a_solo_fit_on_one_device(measured, label):
    for i in range(2):
        run = measured[f"{label} {i}"]
        # float rounding only: the batch sums (and BatchNorm's statistics) are split over "data"
        assert run["params"] < 1e-5 and run["model_state"] < 1e-5 and run["logs"] < 1e-5, (label, i, run)


def test_each_members_batch_is_split_over_the_data_axis(measured):
    grid, flat = measured["2x2"], measured["1d"]
    assert grid["mesh"] == {"population": 2, "data": 2} and flat["mesh"] == {"population": 4}
    # the rows of each batch as placed: (1 member, 64 // 16 steps, 16 / 2 rows) per device
    assert grid["rows_spec"] == "P('population', None, 'data')" and grid["rows_shard"] == [1, 4, 8]
    assert flat["rows_shard"] == [1, 4, 16]
    # XLA's partitioner reduces the gradients and BatchNorm's statistics within each member's pair of
    # devices: groups {0, 1} and {2, 3} (iota notation [2,2]<=[4]); a 1-D population reduces nothing.
    assert grid["all_reduces"] and set(grid["all_reduces"]) <= {"[2,2]<=[4]", "{{0,1},{2,3}}"}, grid
    assert flat["all_reduces"] == []


def test_a_mesh_that_does_not_fit_the_devices_or_the_batch_is_named(measured):
    assert measured["errors"] == [
        "mesh: expected the devices per member, an int that divides the 4 devices (1, 2, 4), got 3",
        "batch_size: 15 examples do not split over 2 devices — use a multiple of 2, e.g. 14 or 16",
        "mesh: expected the axes ('population', 'data'), got ('population', 'model') — pass mesh=D "
        "(D devices per member) or build Mesh(devices, ('population', 'data'))",
        "training.batch_size: 15 examples do not split over 2 devices — use a multiple of 2, e.g. 14 or 16"]


def model():
    return nn.serial(nn.Dense(2))


@pytest.mark.parametrize("mesh, message", [
    (len(jax.devices()) + 1, r"^mesh: expected the devices per member, an int that divides the \d+ devices"),
    (True, r"^mesh: expected the devices per member, .*got True$"),
    (0, r"^mesh: expected the devices per member, .*got 0$"),
    (Mesh(np.array(jax.devices()[:1]), ("data",)), r"^mesh: expected the axes \('population', 'data'\), got \('data',\)"),
])
def test_a_bad_mesh_argument_is_named_with_the_fix(mesh, message):
    with pytest.raises(ValueError, match=message):
        Population(model(), optimizer={"name": "sgd"}, batch_size=4, mesh=mesh)
    with pytest.raises(ValueError, match=message):
        train_population(model(), (np.zeros((8, 3), np.float32), np.zeros(8, np.int32)), members=[MemberSpec(0)],
                         optimizer={"name": "sgd"}, epochs=1, batch_size=4, mesh=mesh, verbose=0)


def test_a_sweeps_training_devices_is_the_devices_per_member_and_a_bad_count_names_the_key():
    assert build_population_mesh(None) is None
    mesh = build_population_mesh("all", batch_size=4)
    assert mesh.axis_names == ("population", "data") and mesh.shape["data"] == len(jax.devices())
    assert population_mesh(1).shape == {"population": len(jax.devices()), "data": 1}
    with pytest.raises(ConfigError, match=r"^training\.devices: expected the devices per member, an int that "
                                          r"divides the \d+ devices"):
        build_population_mesh(len(jax.devices()) + 1)


def test_a_sweep_takes_training_devices_but_still_refuses_shard_params_and_model_axis_by_name():
    from omegaconf import OmegaConf

    from fdl.config.arguments import check_population_keys
    check_population_keys(OmegaConf.create({"training": {"fused": True, "devices": 1}}))
    for key, value in (("shard_params", "fsdp"), ("model_axis", 2)):
        config = OmegaConf.create({"training": {"fused": True, "devices": 1, key: value}})
        with pytest.raises(ConfigError, match=rf"^training\.{key}: a sweep splits its members over the devices "
                                              r"itself — remove the key"):
            check_population_keys(config)
