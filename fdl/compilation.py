"""JAX's persistent compilation cache, on by default, and the seconds a run spends compiling.

The first time fdl trains or evaluates (`fit`, a population, an `Evaluator`,
`fdl train`) it points JAX's persistent compilation cache at
`<fdl cache directory>/jax` (`$FDL_CACHE_DIR/jax`, else `~/.cache/fdl/jax`), so
a second process running the same programs (the same `fdl train` config, a
sweep's next worker) loads them instead of compiling them. Every program is
cached, however quick to compile, so a warm start compiles nothing.

    FDL_COMPILATION_CACHE=off      switch it off (also 0, false, no)
    FDL_COMPILATION_CACHE=/path    use another folder

A cache folder set in `jax.config` (`jax_compilation_cache_dir`) before fdl
runs is left as it is. JAX's own warning applies: whoever can write to the
folder can run code in your processes; keep it private.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import jax

from fdl.data.sources import cache_dir

__all__ = ["ENVIRONMENT_VARIABLE", "compilation_cache_dir", "use_compilation_cache", "CompileClock"]

ENVIRONMENT_VARIABLE = "FDL_COMPILATION_CACHE"
_OFF = {"0", "off", "false", "no"}
_lock = threading.Lock()


def compilation_cache_dir() -> Path | None:
    """The folder fdl gives JAX's compilation cache, or None when `FDL_COMPILATION_CACHE` is off."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if setting.lower() in _OFF:
        return None
    return Path(setting).expanduser() if setting else cache_dir() / "jax"


def use_compilation_cache() -> Path | None:
    """Turns the cache on (idempotent; a folder already set in jax.config wins); returns its folder."""
    with _lock:
        current = jax.config.jax_compilation_cache_dir
        if current:
            return Path(current)
        folder = compilation_cache_dir()
        if folder is None:
            return None
        jax.config.update("jax_compilation_cache_dir", str(folder))
        if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default: not the user's
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        return folder


class CompileClock:
    """Seconds spent turning Python into programs: tracing, lowering, XLA compiling or cache loading.

    Example:
      >>> clock = CompileClock()
      >>> _ = jax.jit(lambda x: x + 1)(1.0)
      >>> clock.seconds() > 0, clock.programs() >= 1
      (True, True)
      >>> clock.close()

    `programs()` counts the programs built since the clock started, `compiled()`
    those of them XLA compiled (the rest came from the compilation cache).
    """

    _DURATIONS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
    _BACKEND, _HIT = "/jax/core/compile/backend_compile_duration", "/jax/compilation_cache/cache_hits"

    def __init__(self):
        self._seconds, self._backend, self._hits = 0.0, 0, 0
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event: str, duration: float, **kwargs) -> None:
        if event in self._DURATIONS:
            self._seconds += duration
            self._backend += event == self._BACKEND

    def _on_event(self, event: str, **kwargs) -> None:
        self._hits += event == self._HIT

    def seconds(self) -> float:
        """Seconds of tracing, lowering and backend compilation (or cache retrieval) so far."""
        return self._seconds

    def programs(self) -> int:
        """Programs built so far: compiled by XLA or loaded from the persistent cache."""
        return self._backend

    def compiled(self) -> int:
        """Programs compiled by XLA so far; programs loaded from the persistent cache are not counted."""
        return self._backend - self._hits

    def close(self) -> None:
        """Stops listening (listeners are process-wide)."""
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)
