"""env.json: the fields are present, JSON-ready, and the config hash follows the text."""
import hashlib
import json
import platform

import jax

from fdl.records import environment, write_json

FIELDS = {"python", "platform", "versions", "backend", "devices", "device_kind", "process_count",
          "process_index", "cpu_count", "hostname", "timestamp_utc", "seed", "config_sha256",
          "git_commit", "git_dirty"}


def test_environment_fields(tmp_path):
    env = environment(seed=7, config_text="model: mlp\n")
    assert FIELDS <= set(env)
    assert set(env["versions"]) == {"fdl", "jax", "jaxlib", "optax", "flax", "numpy"}
    assert env["versions"]["jax"] == jax.__version__
    assert env["python"] == platform.python_version()
    assert env["backend"] == jax.default_backend() and env["devices"] == [str(d) for d in jax.devices()]
    assert env["process_count"] == 1 and env["process_index"] == 0 and env["seed"] == 7
    assert env["timestamp_utc"].endswith("+00:00")
    assert env["config_sha256"] == hashlib.sha256(b"model: mlp\n").hexdigest()
    write_json(tmp_path / "env.json", env)
    assert json.loads((tmp_path / "env.json").read_text()) == env


def test_config_hash_changes_with_the_config_text():
    first = environment(0, "learning_rate: 0.1\n")["config_sha256"]
    assert environment(0, "learning_rate: 0.1\n")["config_sha256"] == first
    assert environment(0, "learning_rate: 0.01\n")["config_sha256"] != first
    assert environment(0)["config_sha256"] is None


def test_git_commit_is_none_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    env = environment(0)
    assert env["git_commit"] is None and env["git_dirty"] is None
