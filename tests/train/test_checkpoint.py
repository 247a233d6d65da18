"""Checkpoints on orbax: exact roundtrips, checksums that catch damage, targets checked, fdl 0.1 files read."""
import os
import warnings

import chex
import jax
import msgpack
import numpy as np
import optax
import pytest

import fdl
from fdl import nn
from fdl.train.checkpoint import CheckpointError, RunCheckpoints, load_checkpoint, save_checkpoint
from fdl.train.state import TrainState


def model(features=3, use_bias=True):
    return nn.serial(nn.Dense(4), nn.BatchNorm(), nn.Dense(features, use_bias=use_bias))


def trained_state(optimizer=None, **model_options):
    """A TrainState after one Adam step: non-trivial opt_state, step and BatchNorm statistics."""
    optimizer = optimizer or optax.adam(1e-2)
    net = model(**model_options)
    state = fdl.init_train_state(net, (2,), optimizer, 0)
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    step = jax.jit(fdl.train.make_train_step(net, fdl.losses.cross_entropy, optimizer))
    state, _ = step(state, (x, np.array([0, 1, 2, 0, 1], np.int32)))
    return state


@pytest.fixture(scope="module")
def state():
    return trained_state()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, state):
    """One checkpoint folder, copied by tests that damage it."""
    path = tmp_path_factory.mktemp("saved") / "ckpt"
    save_checkpoint(path, state, metadata={"epoch": 3})
    return path


def template(optimizer=None, **model_options):
    return fdl.init_train_state(model(**model_options), (2,), optimizer or optax.adam(1e-2), 1)


def assert_same(a, b):
    chex.assert_trees_all_equal_structs(a, b)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, a), jax.tree.map(np.asarray, b))
    chex.assert_trees_all_equal_dtypes(a, b)


def test_a_train_state_roundtrips_exactly(tmp_path, state):
    path = save_checkpoint(tmp_path / "run" / "last", state)  # creates the folders
    assert path == os.fspath(tmp_path / "run" / "last")
    restored, metadata = load_checkpoint(path, template())
    assert isinstance(restored, TrainState) and metadata == {}
    assert type(restored.opt_state[0]) is type(state.opt_state[0])  # optax's ScaleByAdamState survives
    assert_same(restored, state)
    assert int(restored.step) == 1 and np.any(np.asarray(restored.model_state["batch_norm_1"]["mean"]) != 0)


def test_metadata_roundtrips_with_numpy_values_as_plain_json(tmp_path, state):
    metadata = {"epoch": 3, "monitor": "val_loss", "best": np.float32(0.5), "per_class": np.array([1, 2]),
                "nested": {"ok": True, "none": None}}
    save_checkpoint(tmp_path / "a", state, metadata=metadata)
    _, restored = load_checkpoint(tmp_path / "a", template())
    assert restored == {"epoch": 3, "monitor": "val_loss", "best": 0.5, "per_class": [1, 2],
                        "nested": {"ok": True, "none": None}}


def test_without_a_target_the_state_comes_back_as_nested_dicts_of_numpy_arrays(saved, state):
    restored, _ = load_checkpoint(saved)
    assert isinstance(restored, dict) and set(restored) == {"params", "model_state", "opt_state", "step", "rng"}
    np.testing.assert_array_equal(restored["params"]["dense_2"]["w"], state.params["dense_2"]["w"])
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(restored))


def test_a_missing_path_is_a_file_not_found_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing' does not exist — pass a checkpoint folder"):
        load_checkpoint(tmp_path / "missing")


def damage(saved, tmp_path, how):
    """A copy of `saved` damaged: "flip" a byte of the arrays' data, "meta" a number in the metadata,
    "truncate" the arrays' data file, "delete" it."""
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(saved, copy)
    data = max((p for p in (copy / "state" / "d").iterdir()), key=lambda p: p.stat().st_size)
    if how == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        data.write_bytes(bytes(raw))
    elif how == "meta":
        meta = next((copy / "meta").glob("metadata"))
        meta.write_bytes(meta.read_bytes().replace(b'"epoch": 3', b'"epoch": 4'))
    elif how == "truncate":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    else:
        data.unlink()
    return copy


@pytest.mark.parametrize("how", ["flip", "meta", "truncate", "delete"])
def test_a_damaged_checkpoint_is_refused_naming_it(saved, tmp_path, how):
    copy = damage(saved, tmp_path, how)
    with pytest.raises(CheckpointError, match=rf"checkpoint '{copy}': .*(checksum|cannot be read)"):
        load_checkpoint(copy, template())


@pytest.mark.parametrize("target, culprit", [
    (lambda: template(optimizer=optax.sgd(0.1)), "it has state opt_state/0/count, which the target lacks"),
    (lambda: template(features=5), r"state params/dense_2/b has shape \(3,\) in the checkpoint, the target "
                                   r"expects \(5,\)"),
    (lambda: template(use_bias=False), "it has state params/dense_2/b, which the target lacks"),
], ids=["other-optimizer", "other-width", "extra-key"])
def test_a_target_that_does_not_match_is_named_with_the_array(saved, target, culprit):
    with pytest.raises(CheckpointError, match=rf"checkpoint '{saved}': {culprit}"):
        load_checkpoint(saved, target())


def test_a_target_missing_from_the_checkpoint_is_named(tmp_path):
    save_checkpoint(tmp_path / "a", trained_state(use_bias=False))
    with pytest.raises(CheckpointError, match=r"state params/dense_2/b is missing from the checkpoint"):
        load_checkpoint(tmp_path / "a", template())


def test_metadata_that_cannot_be_serialized_leaves_the_old_checkpoint_intact(tmp_path, state):
    save_checkpoint(tmp_path / "last", state, metadata={"epoch": 1})
    with pytest.raises(TypeError, match="checkpoint metadata: to_python: cannot convert type object"):
        save_checkpoint(tmp_path / "last", state, metadata={"epoch": 2, "callback": object()})
    assert load_checkpoint(tmp_path / "last", template())[1] == {"epoch": 1}


def test_a_checkpoint_file_of_fdl_0_1_is_read(tmp_path, state):
    from flax import serialization

    from fdl.train.checkpoint import _serialization

    payload = {"state": _serialization().to_state_dict(jax.device_get(state)), "metadata": '{"epoch": 7}'}
    (tmp_path / "last.ckpt").write_bytes(serialization.msgpack_serialize(payload))
    restored, metadata = load_checkpoint(tmp_path / "last.ckpt", template())
    assert metadata == {"epoch": 7}
    assert_same(restored, state)
    (tmp_path / "junk.ckpt").write_bytes(msgpack.packb({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match=r"junk\.ckpt' is not an fdl checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
    with pytest.raises(CheckpointError, match=r"params/dense_2/b has shape \(3,\) in the checkpoint"):
        load_checkpoint(tmp_path / "last.ckpt", template(features=5))


def test_run_checkpoints_keep_the_newest_and_fall_back_past_a_damaged_one(tmp_path, state):
    checkpoints = RunCheckpoints(tmp_path / "run", keep=2)
    for step in (1, 2, 3):
        checkpoints.save(step, {"state": state.replace(step=np.int32(step))}, {"epoch": step})
    checkpoints.save(3, {"state": state}, {"epoch": 99})  # a step saved already is skipped
    checkpoints.wait()
    assert checkpoints.steps() == [2, 3]
    step, items, metadata = checkpoints.newest({"state": template()})
    assert (step, metadata, int(items["state"].step)) == (3, {"epoch": 3}, 3)
    meta = tmp_path / "run" / "3" / "meta" / "metadata"
    meta.write_bytes(meta.read_bytes().replace(b'"epoch": 3', b'"epoch": 5'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step, items, metadata = checkpoints.newest({"state": template()})
    assert (step, metadata) == (2, {"epoch": 2})
    assert [str(w.message) for w in caught] == [
        f"checkpoint '{tmp_path / 'run' / '3'}': its meta item fails its checksum (damaged) — skipping it, "
        "trying an older one"]
    meta = tmp_path / "run" / "2" / "meta" / "metadata"
    meta.write_bytes(b"{")
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match=rf"no good checkpoint in "
                                                                             rf"'{tmp_path / 'run'}'"):
        checkpoints.newest({"state": template()})
    checkpoints.close()


def test_a_failed_background_write_is_raised(tmp_path, state, monkeypatch):
    checkpoints = RunCheckpoints(tmp_path / "run")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints._manager, "save", full_disk)
    checkpoints.save(1, {"state": state}, {"epoch": 1})  # returns at once
    with pytest.raises(OSError, match="No space left on device"):
        checkpoints.wait()
    checkpoints.close()
    assert checkpoints.steps() == []
