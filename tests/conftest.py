"""Shared fixtures; tests run on CPU with fixed seeds."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
