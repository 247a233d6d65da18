"""fdl.io: `to_python` (device/numpy values -> JSON-ready Python) and the atomic write."""
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from fdl.io import to_python, write_bytes


@pytest.mark.parametrize("value, expected, kind", [
    (np.float32(0.25), 0.25, float),           # 0.25 is exact in float32
    (jnp.asarray(0.75, jnp.float32), 0.75, float),
    (jnp.asarray(1.5, jnp.bfloat16), 1.5, float),  # numpy kind "V", still a float
    (np.float16(-2.0), -2.0, float),
    (np.float64(0.1), 0.1, float),             # a float subclass: converted, not kept
    (np.int64(3), 3, int),
    (jnp.asarray(-7, jnp.int32), -7, int),
    (np.uint8(255), 255, int),
    (np.bool_(True), True, bool),
    (jnp.asarray(False), False, bool),
    (np.str_("relu"), "relu", str),
    (7, 7, int),                               # Python scalars as they are
    (True, True, bool),
    (2.5, 2.5, float),
    ("adam", "adam", str),
    (None, None, type(None)),
    (Path("runs") / "a", "runs/a", str),
])
def test_scalars_keep_their_kind(value, expected, kind):
    plain = to_python(value)
    assert plain == expected and type(plain) is kind


def test_float32_converts_exactly():
    """float32 -> Python float is exact: the float32 nearest 0.1, not 0.1."""
    assert to_python(np.float32(0.1)) == float(np.float32(0.1)) == 0.10000000149011612


def test_arrays_become_nested_lists_of_python_scalars():
    confusion = jnp.asarray([[3, 1], [0, 4]], jnp.int32)
    plain = to_python(confusion)
    assert plain == [[3, 1], [0, 4]] and type(plain[0][0]) is int
    assert to_python(np.array([0.5, 1.0], np.float32)) == [0.5, 1.0]
    assert to_python(np.array([True, False])) == [True, False]
    assert type(to_python(np.array([True]))[0]) is bool
    assert to_python(np.zeros((2, 0))) == [[], []]


def test_nested_containers():
    logs = {"epoch": 2, "loss": np.float32(0.5),
            "per_class": (jnp.asarray([0.25, 0.75]), [np.int64(1), {"ok": np.bool_(False)}]),
            np.int64(4): "int key", "path": Path("x.npy")}
    plain = to_python(logs)
    assert plain == {"epoch": 2, "loss": 0.5, "per_class": [[0.25, 0.75], [1, {"ok": False}]],
                     4: "int key", "path": "x.npy"}
    assert type(list(plain)[3]) is int
    del plain[4]  # json would write the int key as "4"
    assert json.loads(json.dumps(plain)) == plain  # encodable without a `default`


@pytest.mark.parametrize("value, message", [
    (object(), r"to_python: cannot convert type object to a JSON value"),
    ({1, 2}, r"cannot convert type set"),
    (np.array([1j]), r"cannot convert type ndarray of dtype complex128"),
    (np.array([None, 1], dtype=object), r"of dtype object"),
    ([1, {"a": object()}], r"cannot convert type object"),
    ({(1, 2): 3}, r"a mapping key must be a string or a scalar, got type tuple \(\(1, 2\)\)"),
])
def test_unconvertible_values_name_their_type(value, message):
    with pytest.raises(TypeError, match=message):
        to_python(value)


def test_write_bytes_replaces_the_file(tmp_path):
    path = write_bytes(tmp_path / "sub" / "a.json", b"old")
    write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary left behind
