"""Progress for people: a rich spinner on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console


@contextmanager
def step_reporter(title: str) -> Iterator[Callable[[str], None]]:
    """Yield a `report(message)` callback showing the current step and the time spent."""
    console = Console(stderr=True)
    started = time.monotonic()
    if not console.is_terminal:

        def plain(message: str) -> None:
            print(f"[{time.monotonic() - started:5.0f}s] {message}", file=sys.stderr, flush=True)

        plain(title)
        yield plain
        return
    with console.status(title) as status:

        def live(message: str) -> None:
            console.log(message)
            status.update(f"{title}: {message}")

        yield live
