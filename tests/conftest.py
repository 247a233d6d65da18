"""Shared fixtures; tests run on CPU with fixed seeds."""
import atexit
import contextlib
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One fresh compilation cache for the session (subprocesses inherit it): tests that build
# the same programs load them, and nothing from outside the session is read.
if "FDL_COMPILATION_CACHE" not in os.environ:
    os.environ["FDL_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="fdl-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["FDL_COMPILATION_CACHE"], ignore_errors=True)
# The suite is compile-bound (hundreds of small programs, each run a few times): XLA's CPU
# backend at optimisation level 0 compiles them about a third faster. Its numbers differ from
# level 2's by float32 rounding only (another summation order; no fast-math at either level).
# Subprocesses inherit it; a level already in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import pytest  # noqa: E402


class CompileCounter:
    """Counts the programs built (compiled, or loaded from the session's compilation cache) in `counting()`.

    A program the cache holds counts too: the tests count the programs the code needs,
    whichever test built them first.
    """

    def __init__(self):
        from fdl.compilation import CompileClock
        self.clock = CompileClock()

    @contextlib.contextmanager
    def counting(self):
        """Yields a list whose length, after the block, is the number of programs compiled in it."""
        start, compiled = self.count, []
        try:
            yield compiled
        finally:
            compiled.extend([1] * (self.count - start))

    @property
    def count(self) -> int:
        return self.clock.programs()

    def close(self):
        self.clock.close()


@pytest.fixture
def compiles():
    """`with compiles.counting() as compiled: ...` then `len(compiled)` programs were compiled."""
    counter = CompileCounter()
    yield counter
    counter.close()
