"""fdl.errors: the one did-you-mean, shared by every registry and config key lookup."""
import pytest

from fdl.errors import closest, did_you_mean, unknown_name_message

LOSSES = ["cross_entropy", "mse", "huber"]


def test_closest_and_its_cutoff():
    assert closest("cros_entropy", LOSSES) == "cross_entropy"
    assert closest("zzz", LOSSES) is None
    assert closest(3, ["3", "4"]) == "3"  # names are compared as strings


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "did you mean 'cross_entropy'?"),
    ({"quote": False}, "did you mean cross_entropy?"),
    ({"quote": False, "prefix": "loss."}, "did you mean loss.cross_entropy?"),
    ({"prefix": "loss."}, "did you mean 'loss.cross_entropy'?"),
])
def test_did_you_mean_phrases(kwargs, expected):
    assert did_you_mean("cros_entropy", LOSSES, **kwargs) == expected
    assert did_you_mean("zzz", LOSSES, **kwargs) == ""


def test_unknown_name_message_with_and_without_a_suggestion():
    assert unknown_name_message("loss", "cros_entropy", LOSSES) == (
        "unknown loss 'cros_entropy' — did you mean 'cross_entropy'? valid: cross_entropy, huber, mse")
    assert unknown_name_message("loss", "zzz", iter(LOSSES)) == (
        "unknown loss 'zzz' — valid: cross_entropy, huber, mse")
