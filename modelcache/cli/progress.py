"""Progress for people: rich spinners and byte bars on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

stderr_console = Console(stderr=True)


@contextmanager
def step_reporter(title: str) -> Iterator[Callable[[str], None]]:
    """Yield a `report(message)` callback showing the current step and the time spent."""
    started = time.monotonic()
    if not stderr_console.is_terminal:

        def plain(message: str) -> None:
            print(f"[{time.monotonic() - started:5.0f}s] {message}", file=sys.stderr, flush=True)

        plain(title)
        yield plain
        return
    with stderr_console.status(title) as status:

        def live(message: str) -> None:
            stderr_console.log(message)
            status.update(f"{title}: {message}")

        yield live


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class TransferProgress:
    """A byte bar with rate and ETA on a terminal; a line every few seconds otherwise.

    `advance` is called from download threads, hence the lock."""

    def __init__(self, verb: str = "pulling", *, interval: float = 5.0) -> None:
        self.verb = verb
        self.interval = interval
        self._lock = threading.Lock()
        self._rich: Progress | None = None
        self._task: TaskID | None = None
        self._done = 0
        self._total = 0
        self._label = ""
        self._started = 0.0
        self._last_line = 0.0

    def start(self, model: str, version: str, total_bytes: int, files: int) -> None:
        self._label = f"{self.verb} {model} {version}"
        self._total, self._done = total_bytes, 0
        self._started = self._last_line = time.monotonic()
        if stderr_console.is_terminal:
            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr_console,
            )
            self._rich.start()
            self._task = self._rich.add_task(f"{self._label} ({files} files)", total=total_bytes)
        else:
            print(
                f"{self._label}: {files} files, {human_bytes(total_bytes)} to transfer",
                file=sys.stderr,
                flush=True,
            )

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._done += nbytes
            if self._rich is not None and self._task is not None:
                self._rich.advance(self._task, nbytes)
                return
            now = time.monotonic()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-6)
        rate = self._done / elapsed
        percent = 100.0 * self._done / self._total if self._total else 100.0
        print(
            f"{self._label}: {human_bytes(self._done)}/{human_bytes(self._total)} "
            f"({percent:.0f}%) {human_bytes(rate)}/s",
            file=sys.stderr,
            flush=True,
        )

    def from_peers(self, nbytes: int) -> None:
        """Fan-out's share: the CLI pulls from L3 alone (only agents have peers)."""

    def finish(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self._label:
            self._line(time.monotonic())
