"""summary.json layout: exactly the given splits plus epochs, steps and timing."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from fdl.records import run_summary


def test_summary_layout_and_plain_values():
    summary = run_summary(
        {"test": {"loss": np.float32(0.25), "accuracy": jnp.asarray(0.75),
                  "confusion_matrix": np.array([[3, 1], [0, 4]])},
         "train": {"loss": 0.125, "recall_per_class": jnp.asarray([0.5, 1.0])}},
        epochs=np.int64(3), steps=30, wall_time_s=1.5, steps_per_s=np.float64(20.0))
    assert summary == {"train": {"loss": 0.125, "recall_per_class": [0.5, 1.0]},
                       "test": {"loss": 0.25, "accuracy": 0.75, "confusion_matrix": [[3, 1], [0, 4]]},
                       "epochs": 3, "steps": 30, "wall_time_s": 1.5, "steps_per_s": 20.0}
    assert list(summary) == ["train", "test", "epochs", "steps", "wall_time_s", "steps_per_s"]
    assert type(summary["test"]["accuracy"]) is float and type(summary["epochs"]) is int
    assert json.loads(json.dumps(summary)) == summary


def test_summary_all_splits_and_extras():
    summary = run_summary({"val": {"loss": 1}, "test": {"loss": 2}, "train": {"loss": 0}}, epochs=1,
                          steps=2, wall_time_s=3, steps_per_s=4, best_epoch=1)
    assert list(summary) == ["train", "val", "test", "epochs", "steps", "wall_time_s", "steps_per_s",
                             "best_epoch"]
    assert summary["val"] == {"loss": 1.0} and summary["best_epoch"] == 1


def test_summary_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'valid' — expected one of train, val, test"):
        run_summary({"valid": {}}, epochs=1, steps=1, wall_time_s=1, steps_per_s=1)


def test_summary_rejects_an_extra_that_replaces_a_split():
    with pytest.raises(ValueError, match="extra entry 'test' would replace a split"):
        run_summary({}, epochs=1, steps=1, wall_time_s=1, steps_per_s=1, test=0.5)


def test_summary_values_keep_their_kind_and_unencodable_ones_fail_early():
    """Values go through fdl.io.to_python: counts stay ints, flags bools; an object is a TypeError."""
    summary = run_summary({"val": {"count": np.int64(5), "loss": jnp.float32(0.5)}}, epochs=1, steps=1,
                          wall_time_s=1, steps_per_s=1, converged=np.bool_(True), notes="ok")
    assert summary["val"] == {"count": 5, "loss": 0.5} and type(summary["val"]["count"]) is int
    assert summary["converged"] is True and summary["notes"] == "ok"
    with pytest.raises(TypeError, match="to_python: cannot convert type object"):
        run_summary({"val": {"loss": object()}}, epochs=1, steps=1, wall_time_s=1, steps_per_s=1)


def test_plain_value_is_still_importable():
    from fdl.io import to_python
    from fdl.records import plain_value

    assert plain_value is to_python
