"""One-line error messages shared by every registry lookup (layers, losses, optimizers, ...)."""
from __future__ import annotations

import difflib
from typing import Iterable


def closest(name: object, valid: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name most like `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def unknown_name_message(kind: str, name: object, valid: Iterable[str]) -> str:
    """`unknown loss 'cros_entropy' — did you mean 'cross_entropy'? valid: ...` (one line)."""
    valid = list(valid)
    match = closest(name, valid)
    hint = f"did you mean {match!r}? " if match else ""
    return f"unknown {kind} {name!r} — {hint}valid: {', '.join(sorted(valid))}"
