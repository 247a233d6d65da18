"""`run_summary`: the final numbers of a run, for summary.json.

Layout: `{"train": {...}, "val": {...}, "test": {...}, "epochs": N, "steps": N,
"wall_time_s": s, "steps_per_s": r}` — only the splits given, metric values
as plain floats, per-class metrics and confusion matrices as nested lists.
"""
from __future__ import annotations

import numbers

import numpy as np

SPLITS = ("train", "val", "test")
_FIXED = ("epochs", "steps", "wall_time_s", "steps_per_s")


def plain_value(value):
    """A JSON-ready metric value: scalars (numpy, jax, Python) -> float, arrays -> nested lists."""
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return float(value)
    array = np.asarray(value)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        return value.tolist() if hasattr(value, "tolist") else value
    return float(array) if array.ndim == 0 else array.tolist()


def run_summary(splits: dict[str, dict], *, epochs: int, steps: int, wall_time_s: float,
                steps_per_s: float, **extra) -> dict:
    """The summary.json object of a finished run.

    Example:
      >>> run_summary({"val": fdl.evaluate(model, state, val), "test": fdl.evaluate(model, state, test)},
      ...             epochs=20, steps=2000, wall_time_s=31.2, steps_per_s=64.1, best_epoch=17)

    Args:
      splits: split name ("train", "val" or "test") -> {metric: value}, e.g. the
        result of `fdl.evaluate`. Values may be numpy/jax scalars or arrays.
      epochs, steps: epochs and optimizer steps run.
      wall_time_s: the training wall time in seconds.
      steps_per_s: training throughput.
      **extra: further top-level entries (e.g. best_epoch=17), after the fixed ones.

    Returns:
      the dict described in the module docstring, splits in train/val/test order.

    Raises:
      ValueError: an unknown split name, or an extra entry that would replace a fixed one.
    """
    unknown = [name for name in splits if name not in SPLITS]
    if unknown:
        raise ValueError(f"run_summary: unknown split {unknown[0]!r} — expected one of "
                         f"{', '.join(SPLITS)}")
    clashes = [name for name in extra if name in SPLITS]
    if clashes:
        raise ValueError(f"run_summary: extra entry {clashes[0]!r} would replace a split — "
                         "pass it inside `splits`")
    summary = {name: {key: plain_value(value) for key, value in splits[name].items()}
               for name in SPLITS if name in splits}
    summary.update(epochs=int(epochs), steps=int(steps), wall_time_s=float(wall_time_s),
                   steps_per_s=float(steps_per_s))
    # Extras keep their Python types (best_epoch stays an int); arrays become lists.
    summary.update({key: plain_value(value) if hasattr(value, "dtype") else value
                    for key, value in extra.items()})
    return summary
