"""Errors as one line: what a user reads in a CLI error, an event or a status message."""

from __future__ import annotations

from pydantic import ValidationError

MAX_PROBLEMS = 3


def one_line(error: Exception) -> str:
    """A pydantic ValidationError as `field: message; ...` (the first few), anything else
    with its whitespace (newlines of a multi-line message) folded into single spaces."""
    if isinstance(error, ValidationError):
        problems = error.errors()
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in problems[:MAX_PROBLEMS]
        )
        more = len(problems) - MAX_PROBLEMS
        text = shown + (f" (and {more} more)" if more > 0 else "")
    else:
        text = str(error)
    return " ".join(text.split())  # a field name or a message may hold newlines too
