"""The cache event log: one JSON line per event, to a file and to stdout.

Event names follow the case's operators' vocabulary (L2_SYNC, L1_LOAD...), so
the log reads like theirs: `{"ts": ..., "event": "L2_FLIP", "model": ..., ...}`.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import IO, Any


class Event(StrEnum):
    PULL_START = "L3_PULL_START"
    PULL_END = "L3_PULL_END"
    FILE_FETCHED = "L3_FETCH"
    L2_HIT = "L2_HIT"
    VERIFY = "L2_VERIFY"
    VERIFY_FAILED = "L2_VERIFY_FAILED"
    REPAIR = "L2_REPAIR"
    INSTALL = "L2_INSTALL"
    FLIP = "L2_FLIP"
    WARMUP = "L2_WARMUP"
    EVICT = "L2_EVICT"
    GC = "L2_GC"
    RELOAD = "L1_RELOAD"
    CONFIG = "AGENT_CONFIG"
    ERROR = "ERROR"


Listener = Callable[[dict[str, Any]], None]


class EventLog:
    """Thread-safe JSON-lines sink; listeners see every record (metrics, tests)."""

    def __init__(
        self, path: Path | None = None, *, stdout: bool = False, node: str | None = None
    ) -> None:
        self.path = path
        self.node = node
        self._stdout = stdout
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._listeners: list[Listener] = []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: Event, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "event": str(event),
        }
        if self.node is not None:
            record["node"] = self.node
        record.update(fields)
        line = json.dumps(record, default=str, separators=(",", ":"))
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            if self._stdout:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            for listener in self._listeners:
                listener(record)
        return record

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every record of an event log file (for tests and `modelcache` tooling)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
