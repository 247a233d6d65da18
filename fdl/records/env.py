"""`environment`: what a run ran on, for env.json.

Python and package versions, the JAX backend and devices, the host, the UTC
start time, the seed, the SHA-256 of the resolved configuration and the git
commit of the working directory — enough to tell two runs' setups apart.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys

import jax

__all__ = ["PACKAGES", "package_version", "config_sha256", "git_info", "environment"]


PACKAGES = ("fdl", "jax", "jaxlib", "optax", "flax", "numpy")


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def config_sha256(config_text: str | None) -> str | None:
    """The hex SHA-256 of the resolved config text (UTF-8), or None without one."""
    return None if config_text is None else hashlib.sha256(config_text.encode("utf-8")).hexdigest()


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=os.getcwd(), capture_output=True, text=True,
                                timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, or too slow
        return None
    return result.stdout.strip()


def git_info() -> dict:
    """{"commit": HEAD of the cwd's repository, "dirty": uncommitted changes}; Nones outside git."""
    commit = _git("rev-parse", "HEAD") or None
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def environment(seed: int | None, config_text: str | None = None) -> dict:
    """The run's environment as a JSON-ready dict (see the module docstring).

    Args:
      seed: the run's seed.
      config_text: the resolved configuration as written to config.yaml; its
        hash identifies the exact settings (None when the run had no config).

    Returns:
      {"python", "platform", "versions": {package: version or None}, "backend",
      "devices": [str], "device_kind", "process_count", "process_index",
      "cpu_count", "hostname", "timestamp_utc" (ISO 8601), "seed",
      "config_sha256", "git_commit", "git_dirty"}.
    """
    devices = jax.devices()
    git = git_info()
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "versions": {name: package_version(name) for name in PACKAGES},
        "backend": jax.default_backend(),
        "devices": [str(device) for device in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "config_sha256": config_sha256(config_text),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
    }
