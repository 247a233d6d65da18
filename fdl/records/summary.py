"""`run_summary`: the final numbers of a run, for summary.json.

Layout: `{"train": {...}, "val": {...}, "test": {...}, "epochs": N, "steps": N,
"wall_time_s": s, "steps_per_s": r}` — only the splits given, metric values
as Python numbers (`fdl.io.to_python`: float metrics as floats, counts as
ints), per-class metrics and confusion matrices as nested lists.
"""
from __future__ import annotations

from fdl.io import to_python

__all__ = ["SPLITS", "plain_value", "run_summary"]

SPLITS = ("train", "val", "test")

# The name `fdl.records` exports; the one conversion is `fdl.io.to_python`.
plain_value = to_python


def run_summary(splits: dict[str, dict], *, epochs: int, steps: int, wall_time_s: float,
                steps_per_s: float, **extra) -> dict:
    """The summary.json object of a finished run.

    Example:
      >>> run_summary({"val": fdl.evaluate(model, state, val), "test": fdl.evaluate(model, state, test)},
      ...             epochs=20, steps=2000, wall_time_s=31.2, steps_per_s=64.1, best_epoch=17)
      {'val': {'loss': ..., 'accuracy': ...}, 'test': {'loss': ..., 'accuracy': ...},
       'epochs': 20, 'steps': 2000, 'wall_time_s': 31.2, 'steps_per_s': 64.1, 'best_epoch': 17}

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
      TypeError: a value with no JSON form (see `fdl.io.to_python`).
    """
    unknown = [name for name in splits if name not in SPLITS]
    if unknown:
        raise ValueError(f"run_summary: unknown split {unknown[0]!r} — expected one of "
                         f"{', '.join(SPLITS)}")
    clashes = [name for name in extra if name in SPLITS]
    if clashes:
        raise ValueError(f"run_summary: extra entry {clashes[0]!r} would replace a split — "
                         "pass it inside `splits`")
    summary = {name: to_python(splits[name]) for name in SPLITS if name in splits}
    summary.update(epochs=int(epochs), steps=int(steps), wall_time_s=float(wall_time_s),
                   steps_per_s=float(steps_per_s))
    # Extras keep their Python types (best_epoch stays an int); arrays become lists.
    summary.update(to_python(extra))
    return summary
