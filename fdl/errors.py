"""One-line error messages shared by every registry lookup (layers, losses, optimizers, ...).

The one did-you-mean: `closest` finds the suggestion (the only `difflib` use),
`did_you_mean` words it, `unknown_name_message` is the whole message.
"""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["closest", "did_you_mean", "unknown_name_message"]


def closest(name: object, valid: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name most like `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def did_you_mean(name: object, valid: Iterable[str], *, quote: bool = True, prefix: str = "") -> str:
    """`did you mean 'cross_entropy'?` for the closest valid name, or "" when none is close.

    `prefix` goes before the suggestion and `quote=False` leaves it bare, for
    config key paths: `did_you_mean("learnig_rate", fields, quote=False,
    prefix="optimizer.")` -> `did you mean optimizer.learning_rate?`.
    """
    match = closest(name, valid)
    if match is None:
        return ""
    suggestion = prefix + match
    return f"did you mean {suggestion!r}?" if quote else f"did you mean {suggestion}?"


def unknown_name_message(kind: str, name: object, valid: Iterable[str]) -> str:
    """`unknown loss 'cros_entropy' — did you mean 'cross_entropy'? valid: ...` (one line)."""
    valid = list(valid)
    hint = did_you_mean(name, valid)
    return f"unknown {kind} {name!r} — {hint + ' ' if hint else ''}valid: {', '.join(sorted(valid))}"
