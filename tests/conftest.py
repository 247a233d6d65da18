"""Shared fixtures; tests run on CPU with fixed seeds."""
import contextlib
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402 — after JAX_PLATFORMS is set
import pytest  # noqa: E402


class CompileCounter:
    """Counts XLA compilations (backend compiles, cache hits excluded) while `counting()` is open."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1

    @contextlib.contextmanager
    def counting(self):
        """Yields a list whose length, after the block, is the number of programs compiled in it."""
        start, compiled = self.count, []
        try:
            yield compiled
        finally:
            compiled.extend([1] * (self.count - start))

    def close(self):
        jax.monitoring.unregister_event_duration_listener(self._listen)


@pytest.fixture
def compiles():
    """`with compiles.counting() as compiled: ...` then `len(compiled)` programs were compiled."""
    counter = CompileCounter()
    yield counter
    counter.close()
