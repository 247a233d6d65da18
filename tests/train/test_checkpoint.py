"""save_checkpoint/load_checkpoint: exact roundtrips, every error path, atomic writes."""
import os

import chex
import jax
import msgpack
import numpy as np
import optax
import pytest
from flax import serialization

import fdl
import fdl.io
from fdl import nn
from fdl.train.checkpoint import load_checkpoint, save_checkpoint
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


def template(optimizer=None, **model_options):
    return fdl.init_train_state(model(**model_options), (2,), optimizer or optax.adam(1e-2), 1)


def test_a_train_state_roundtrips_exactly(tmp_path, state):
    path = save_checkpoint(tmp_path / "run" / "last.ckpt", state)  # creates the folder
    assert path == os.fspath(tmp_path / "run" / "last.ckpt")
    restored, metadata = load_checkpoint(path, template())
    assert isinstance(restored, TrainState) and metadata == {}
    assert type(restored.opt_state[0]) is type(state.opt_state[0])  # optax's ScaleByAdamState survives
    chex.assert_trees_all_equal_structs(restored, state)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, restored), jax.tree.map(np.asarray, state))
    chex.assert_trees_all_equal_dtypes(restored, state)
    assert int(restored.step) == 1 and np.any(np.asarray(restored.model_state["batch_norm_1"]["mean"]) != 0)


def test_metadata_roundtrips_with_numpy_values_as_plain_json(tmp_path, state):
    metadata = {"epoch": 3, "monitor": "val_loss", "best": np.float32(0.5), "per_class": np.array([1, 2]),
                "nested": {"ok": True, "none": None}}
    save_checkpoint(tmp_path / "a.ckpt", state, metadata=metadata)
    _, restored = load_checkpoint(tmp_path / "a.ckpt", template())
    assert restored == {"epoch": 3, "monitor": "val_loss", "best": 0.5, "per_class": [1, 2],
                        "nested": {"ok": True, "none": None}}


def test_without_a_target_the_state_comes_back_as_nested_dicts_of_numpy_arrays(tmp_path, state):
    save_checkpoint(tmp_path / "a.ckpt", state)
    restored, _ = load_checkpoint(tmp_path / "a.ckpt")
    expected = serialization.to_state_dict(jax.device_get(state))
    assert isinstance(restored, dict) and set(restored) == {"params", "model_state", "opt_state", "step", "rng"}
    assert set(restored["opt_state"]["0"]) == {"count", "mu", "nu"}
    chex.assert_trees_all_equal(restored, expected)
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(restored))


def test_a_missing_file_is_a_file_not_found_error_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt' does not exist — pass the path"):
        load_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):  # a folder is not a checkpoint either
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("contents", [
    b"\x00\x01garbage\xff" * 10,
    b"",
    msgpack.packb({"weights": [1, 2, 3]}),  # valid msgpack, not an fdl checkpoint
    msgpack.packb({"state": {}, "metadata": "{not json"}),
], ids=["garbage", "empty", "other-msgpack", "bad-metadata"])
def test_a_file_that_is_not_a_checkpoint_is_a_value_error_naming_the_path(tmp_path, contents):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(contents)
    with pytest.raises(ValueError, match=r"junk\.ckpt' is not an fdl checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("target, culprit", [
    (lambda: template(optimizer=optax.sgd(0.1)), "the checkpoint has opt_state/0/count, which the target lacks"),
    (lambda: template(features=5),
     r"params/dense_2/b has shape \(3,\) in the checkpoint, the target expects \(5,\)"),  # keys sorted
    (lambda: template(use_bias=False), "the checkpoint has params/dense_2/b, which the target lacks"),
    (lambda: {"params": {}, "step": np.zeros((), np.int32)},
     "the checkpoint has params/batch_norm_1/bias, which the target lacks"),
], ids=["other-optimizer", "other-width", "extra-key", "other-structure"])
def test_a_target_that_does_not_match_is_a_value_error_naming_the_file_and_the_path(tmp_path, state, target,
                                                                                   culprit):
    save_checkpoint(tmp_path / "a.ckpt", state)
    with pytest.raises(ValueError, match=rf"a\.ckpt' does not match .*{culprit}"):
        load_checkpoint(tmp_path / "a.ckpt", target())


def test_a_target_missing_from_the_checkpoint_is_named(tmp_path):
    save_checkpoint(tmp_path / "a.ckpt", trained_state(use_bias=False))
    with pytest.raises(ValueError, match=r"params/dense_2/b is missing from the checkpoint — build the target"):
        load_checkpoint(tmp_path / "a.ckpt", template())


def files_in(folder):
    return sorted(path.name for path in folder.iterdir())


def test_metadata_that_cannot_be_serialized_leaves_the_old_checkpoint_intact(tmp_path, state):
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, state, metadata={"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="checkpoint metadata: to_python: cannot convert type object"):
        save_checkpoint(path, state, metadata={"epoch": 2, "callback": object()})
    assert path.read_bytes() == before and files_in(tmp_path) == ["last.ckpt"]


def test_a_write_that_fails_midway_leaves_the_old_checkpoint_intact_and_no_temporary_file(tmp_path, state,
                                                                                         monkeypatch):
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, state, metadata={"epoch": 1})
    before = path.read_bytes()

    def failing_fsync(descriptor):  # the new bytes are written, not yet made durable
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fdl.io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, state.replace(step=state.step + 1), metadata={"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before and files_in(tmp_path) == ["last.ckpt"]
    _, metadata = load_checkpoint(path, template())
    assert metadata == {"epoch": 1}


def test_the_background_writer_ends_with_the_newest_state_and_raises_a_failed_write(tmp_path, state):
    from fdl.train.checkpoint import CheckpointWriter
    writer = CheckpointWriter()
    for step in range(5):  # faster than the disk: waiting states are replaced, the file ends newest
        writer.submit(tmp_path / "last.ckpt", state.replace(step=np.int32(step)), {"epoch": step})
    writer.submit(tmp_path / "best.ckpt", state, {"epoch": 2})
    writer.close()
    restored, metadata = load_checkpoint(tmp_path / "last.ckpt", template())
    assert metadata == {"epoch": 4} and int(restored.step) == 4
    assert load_checkpoint(tmp_path / "best.ckpt", template())[1] == {"epoch": 2}
    (tmp_path / "blocked").write_text("a file where a folder should be")
    writer.submit(tmp_path / "blocked" / "last.ckpt", state)
    with pytest.raises(OSError):
        writer.close()
