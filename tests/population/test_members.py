"""Population training: member i equals a solo fit; strategies agree; no recompiles; early stopping."""
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.population import MemberSpec, Population, evaluate_population, train_population


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.5 * rng.normal(size=(160, 3)), axis=1).astype(np.int32)
    return (x[:120], y[:120]), (x[120:], y[120:])


def model():
    return nn.serial(nn.Dense(8), nn.Relu(), nn.Dropout(0.2), nn.Dense(3))


MEMBERS = [MemberSpec(0, {"learning_rate": 1e-2}), MemberSpec(1, {"learning_rate": 3e-2}),
           MemberSpec(2, {"learning_rate": 1e-3})]
COMMON = dict(loss="cross_entropy", optimizer={"name": "adam"}, epochs=3, batch_size=20,
              metrics=["accuracy"], verbose=0)


@pytest.fixture(scope="module")
def mapped(data):
    return train_population(model(), *data, members=MEMBERS, strategy="map", **COMMON)


def close(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-6), a, b)


def test_each_member_equals_a_solo_fit(data, mapped):
    for i, member in enumerate(MEMBERS):
        state, history = fdl.fit(model(), data[0], val=data[1], seed=member.seed, verbose=0,
                                 optimizer={"name": "adam", **member.hyperparams},
                                 **{k: COMMON[k] for k in ("loss", "epochs", "batch_size", "metrics")})
        np.testing.assert_allclose([h["val_loss"] for h in mapped.histories[i]], history["val_loss"], rtol=1e-5)
        np.testing.assert_allclose(mapped.final[i]["learning_rate"], member.hyperparams["learning_rate"], rtol=1e-6)
        best = mapped.best_epoch[i]
        assert mapped.best[i]["val_loss"] == min(h["val_loss"] for h in mapped.histories[i])
        if best == 3:
            close(jax.tree.map(lambda a: a[i], mapped.best_states.params), state.params)


def test_vmap_and_chunks_agree_with_map(data, mapped):
    for strategy, max_members, label in (("vmap", None, "vmap"), ("vmap", 2, "chunks of 2")):
        result = train_population(model(), *data, members=MEMBERS, strategy=strategy,
                                  max_members=max_members, **COMMON)
        assert result.strategy == label and mapped.strategy == "map"
        for got, want in zip(result.histories, mapped.histories):
            np.testing.assert_allclose([h["val_loss"] for h in got], [h["val_loss"] for h in want], rtol=1e-4)


def test_new_hyperparameter_values_and_seeds_do_not_recompile(data):
    traces = []

    def counting_loss(output, target):
        traces.append(1)
        return fdl.losses.cross_entropy(output, target)

    population, runs = Population(model(), loss=counting_loss, optimizer={"name": "adam"}, batch_size=20,
                                  metrics=["accuracy"]), []
    for lrs, seeds in (((1e-2, 2e-2), (0, 1)), ((5e-3, 7e-2), (5, 6))):
        members = [MemberSpec(s, {"learning_rate": lr}) for s, lr in zip(seeds, lrs)]
        runs.append(population.train(*data, members=members, epochs=2, verbose=0))
        if len(runs) == 1:
            first, traces[:] = len(traces), []
    assert first >= 1 and traces == []  # the second population reused the compiled program
    assert runs[1].final[1]["learning_rate"] == pytest.approx(7e-2)


def test_per_member_early_stopping_freezes_the_member(data):
    stops = []

    def stop_member_one(epoch, logs, active):
        stops.append(active.copy())
        return [1] if epoch == 1 else []

    result = train_population(model(), *data, members=MEMBERS, strategy="map",
                              on_epoch_end=stop_member_one, **COMMON)
    assert result.pruned == [False, True, False] and result.stopped_epoch[1] == 1
    assert len(result.histories[1]) == 1 and len(result.histories[0]) == 3
    assert not stops[1][1] and stops[1][0]
    scores = evaluate_population(model(), result.best_states, data[1], metrics=["accuracy"])
    assert len(scores) == 3 and all(0 <= s["accuracy"] <= 1 for s in scores)
    np.testing.assert_allclose(scores[1]["loss"], result.best[1]["val_loss"], rtol=1e-5)


def test_early_stopping_callbacks_stop_members_that_stop_improving(data):
    result = train_population(model(), *data, members=[MemberSpec(0, {"learning_rate": 0.0})],
                              callbacks=lambda: [fdl.callbacks.EarlyStopping("val_loss", patience=1)],
                              **{**COMMON, "epochs": 4})
    assert result.stopped_epoch == [2] and len(result.histories[0]) == 2


def per_member_callbacks():
    return [fdl.callbacks.EarlyStopping("val_accuracy", patience=2, min_delta=0.01, restore_best=True),
            fdl.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_delta=1e-3)]


def test_each_member_runs_its_own_callbacks_like_fit(data):
    """Early stopping (restore best) and ReduceLROnPlateau per member equal fit with the same callbacks."""
    members = [MemberSpec(0, {"learning_rate": 3e-2}), MemberSpec(1, {"learning_rate": 1e-1})]
    settings = {**COMMON, "epochs": 8}
    result = train_population(model(), *data, members=members, callbacks=per_member_callbacks, **settings)
    for i, member in enumerate(members):
        state, history = fdl.fit(model(), data[0], val=data[1], seed=member.seed, verbose=0,
                                 optimizer={"name": "adam", **member.hyperparams},
                                 callbacks=per_member_callbacks(),
                                 **{k: settings[k] for k in ("loss", "epochs", "batch_size", "metrics")})
        assert len(result.histories[i]) == len(history)
        np.testing.assert_allclose([h["learning_rate"] for h in result.histories[i]], history["learning_rate"],
                                   rtol=1e-6)
        np.testing.assert_allclose([h["val_loss"] for h in result.histories[i]], history["val_loss"], rtol=1e-4)
        # 8 epochs of vmapped vs single float32 rounding: agree to ~1e-5
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=2e-5),
                     jax.tree.map(lambda a: a[i], result.states.params), state.params)
    assert any(len(h) < settings["epochs"] for h in result.histories)  # early stopping acted
    assert any(h[-1]["learning_rate"] < h[0]["learning_rate"] for h in result.histories)  # and the plateau


def test_a_member_callback_that_reads_the_whole_state_is_refused(data):
    class Peek(fdl.callbacks.Callback):
        def on_epoch_end(self, run, epoch, logs):
            run.state

    with pytest.raises(TypeError, match="cannot read or replace the whole state"):
        train_population(model(), *data, members=MEMBERS[:1], callbacks=lambda: [Peek()], **COMMON)


SHARDED = textwrap.dedent("""
    import json, numpy as np, jax
    from fdl import nn
    from fdl.population.members import MemberSpec, train_population
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32); y = (x[:, 0] > 0).astype(np.int32)
    members = [MemberSpec(s, {"learning_rate": lr}) for s, lr in enumerate([1e-2, 2e-2, 3e-2])]
    r = train_population(nn.serial(nn.Dense(4), nn.Relu(), nn.Dense(2)), (x, y), (x, y), members=members,
                         optimizer={"name": "adam"}, epochs=2, batch_size=20, verbose=0, strategy="map")
    print(json.dumps({"devices": len(jax.devices()), "val": [h[-1]["val_loss"] for h in r.histories]}))
""")


def test_four_simulated_devices_give_the_same_results_as_one():
    # Both processes at once: each mostly compiles, on one core.
    processes = []
    for count in (1, 4):
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
        processes.append(subprocess.Popen([sys.executable, "-c", SHARDED], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env))
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate()
        assert process.returncode == 0, stderr[-2000:]
        outputs.append(__import__("json").loads(stdout.strip().splitlines()[-1]))
    assert [o["devices"] for o in outputs] == [1, 4]
    np.testing.assert_allclose(outputs[0]["val"], outputs[1]["val"], rtol=1e-5)
