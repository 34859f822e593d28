"""The cache event log: one typed event per change, one JSON line each, to a file and stdout.

Each kind of event is one dataclass below, so what an event carries is written once: the
engine builds them, the log writes them, the metrics read their fields by attribute.
Event names follow the case's operators' vocabulary (L2_SYNC, L1_LOAD...), so the log
reads like theirs: `{"ts": ..., "event": "L2_FLIP", "model": ..., ...}`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, ClassVar


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
    REMOVE = "L2_REMOVE"
    PIN = "L2_PIN"
    UNPIN = "L2_UNPIN"
    GC = "L2_GC"
    RELOAD = "L1_RELOAD"
    CONFIG = "AGENT_CONFIG"
    ERROR = "ERROR"


@dataclass(frozen=True, kw_only=True)
class CacheEvent:
    """One event; `kind` is its name in the log, the fields its JSON keys."""

    kind: ClassVar[Event]

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, kw_only=True)
class ModelEvent(CacheEvent):
    """An event about one version of one model."""

    model: str
    version: str


@dataclass(frozen=True, kw_only=True)
class PullStarted(ModelEvent):
    kind = Event.PULL_START
    source: str
    files: int
    files_to_download: int
    bytes_to_download: int


@dataclass(frozen=True, kw_only=True)
class PullEnded(ModelEvent):
    kind = Event.PULL_END
    scheme: str
    files_downloaded: int
    files_cached: int
    bytes_downloaded: int
    seconds: float
    rate_bytes_per_second: int | None


@dataclass(frozen=True, kw_only=True)
class FileFetched(ModelEvent):
    kind = Event.FILE_FETCHED
    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class AlreadyCached(ModelEvent):
    """A pull of a version the node already holds: nothing downloaded."""

    kind = Event.L2_HIT
    files: int


@dataclass(frozen=True, kw_only=True)
class VerifyFailed(ModelEvent):
    kind = Event.VERIFY_FAILED
    file: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Repaired(ModelEvent):
    kind = Event.REPAIR
    file: str
    sha256: str
    relinked: int


@dataclass(frozen=True, kw_only=True)
class Installed(ModelEvent):
    kind = Event.INSTALL


@dataclass(frozen=True, kw_only=True)
class Warmed(ModelEvent):
    kind = Event.WARMUP
    bytes: int


@dataclass(frozen=True, kw_only=True)
class Flipped(ModelEvent):
    kind = Event.FLIP
    previous: str | None
    rollback: bool = False


@dataclass(frozen=True, kw_only=True)
class Evicted(ModelEvent):
    """A version removed by retention."""

    kind = Event.EVICT


@dataclass(frozen=True, kw_only=True)
class ModelRemoved(CacheEvent):
    """A whole model removed (its ModelVersion deleted, the node no longer selected)."""

    kind = Event.REMOVE
    model: str
    versions: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Pinned(ModelEvent):
    kind = Event.PIN


@dataclass(frozen=True, kw_only=True)
class Unpinned(ModelEvent):
    kind = Event.UNPIN


@dataclass(frozen=True, kw_only=True)
class Collected(CacheEvent):
    """Unreferenced blobs, old partial downloads and quarantined files deleted."""

    kind = Event.GC
    bytes_freed: int
    blobs_removed: int


@dataclass(frozen=True, kw_only=True)
class ReloadCalled(ModelEvent):
    kind = Event.RELOAD
    target: str  # the pod's name, or the URL in standalone mode
    url: str
    ok: bool
    status: int | None
    live_version: str | None
    reason: str | None
    seconds: float


@dataclass(frozen=True, kw_only=True)
class ConfigLoaded(CacheEvent):
    kind = Event.CONFIG
    config: str
    models: int
    started: bool = False


@dataclass(frozen=True, kw_only=True)
class Failed(CacheEvent):
    kind = Event.ERROR
    operation: str
    error: str
    model: str | None = None
    version: str | None = None


Listener = Callable[[CacheEvent], None]


class EventLog:
    """Thread-safe JSON-lines sink; listeners see every event (metrics, tests)."""

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

    def emit(self, event: CacheEvent) -> dict[str, Any]:
        record: dict[str, Any] = {
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "event": str(event.kind),
        }
        if self.node is not None:
            record["node"] = self.node
        record.update(event.fields())
        line = json.dumps(record, default=str, separators=(",", ":"))
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            if self._stdout:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            for listener in self._listeners:
                listener(event)
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
