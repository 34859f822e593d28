"""The cache event log: one typed event per change, one JSON line each, to a file and stdout.

Each of the agent's kinds of event is one dataclass below, so what an event carries is
written once: the engine builds them, the log writes them, the metrics read their fields by
attribute. The kinds and the event base are in `modelcache/api/events.py` (the runtime's
events share them); a reload call's event is `modelcache.api.reload.ReloadOutcome`.
Event names follow the case's operators' vocabulary (L2_FLIP, L1_LOAD...), so the log
reads like theirs: `{"ts": ..., "event": "L2_FLIP", "model": ..., ...}`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from modelcache.api import CacheEvent, EventKind, ModelEvent


@dataclass(frozen=True, kw_only=True)
class PullStarted(ModelEvent):
    kind = EventKind.L3_PULL_START
    source: str
    files: int
    files_to_download: int
    bytes_to_download: int


@dataclass(frozen=True, kw_only=True)
class PullEnded(ModelEvent):
    kind = EventKind.L3_PULL_END
    scheme: str
    files_downloaded: int
    files_cached: int
    bytes_downloaded: int
    bytes_from_peers: int = 0
    seconds: float
    rate_bytes_per_second: int | None


@dataclass(frozen=True, kw_only=True)
class FileFetched(ModelEvent):
    """A blob downloaded and verified: how many of its bytes and pieces came from the site's
    peers rather than from L3 (docs/fanout.md)."""

    kind = EventKind.L3_FETCH
    file: str
    bytes: int
    sha256: str
    bytes_from_l3: int = 0  # received this time (a resumed file's earlier bytes are not)
    bytes_from_peers: int = 0
    pieces_from_l3: int = 0
    pieces_from_peers: int = 0
    peers: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PeerBadPiece(ModelEvent):
    """A peer served bytes that fail the publisher's digest of that piece: the piece was
    fetched elsewhere and the peer is avoided for the rest of the file."""

    kind = EventKind.PEER_BAD_PIECE
    peer: str
    file: str
    sha256: str
    piece: int


@dataclass(frozen=True, kw_only=True)
class PeerUnavailable(ModelEvent):
    """A peer refused, failed or stalled while this node waited on it for a file: its pieces
    go to the next node in the rendezvous order, and finally to L3."""

    kind = EventKind.PEER_UNAVAILABLE
    peer: str
    file: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ResumeDiscarded(ModelEvent):
    """A partial download's resume record was not trusted (unreadable, of another version,
    or its claims failed verification): the file is fetched from zero."""

    kind = EventKind.L3_RESUME_DISCARDED
    file: str
    sha256: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class AlreadyCached(ModelEvent):
    """A pull of a version the node already holds: nothing downloaded."""

    kind = EventKind.L2_HIT
    files: int


@dataclass(frozen=True, kw_only=True)
class VerifyFailed(ModelEvent):
    kind = EventKind.L2_VERIFY_FAILED
    file: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Repaired(ModelEvent):
    kind = EventKind.L2_REPAIR
    file: str
    sha256: str
    relinked: int


@dataclass(frozen=True, kw_only=True)
class Installed(ModelEvent):
    kind = EventKind.L2_INSTALL


@dataclass(frozen=True, kw_only=True)
class Warmed(ModelEvent):
    kind = EventKind.L2_WARMUP
    bytes: int


@dataclass(frozen=True, kw_only=True)
class Flipped(ModelEvent):
    kind = EventKind.L2_FLIP
    previous: str | None
    rollback: bool = False


@dataclass(frozen=True, kw_only=True)
class Evicted(ModelEvent):
    """A version removed by retention."""

    kind = EventKind.L2_EVICT


@dataclass(frozen=True, kw_only=True)
class ModelRemoved(CacheEvent):
    """A whole model removed (its ModelVersion deleted, the node no longer selected)."""

    kind = EventKind.L2_REMOVE
    model: str
    versions: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Pinned(ModelEvent):
    kind = EventKind.L2_PIN


@dataclass(frozen=True, kw_only=True)
class Unpinned(ModelEvent):
    kind = EventKind.L2_UNPIN


@dataclass(frozen=True, kw_only=True)
class Collected(CacheEvent):
    """Unreferenced blobs, old partial downloads and quarantined files deleted."""

    kind = EventKind.L2_GC
    bytes_freed: int
    blobs_removed: int


@dataclass(frozen=True, kw_only=True)
class ConfigLoaded(CacheEvent):
    kind = EventKind.AGENT_CONFIG
    config: str
    models: int
    started: bool = False


@dataclass(frozen=True, kw_only=True)
class Failed(CacheEvent):
    kind = EventKind.ERROR
    operation: str
    error: str
    model: str | None = None
    version: str | None = None


Listener = Callable[[CacheEvent], None]


class EventLog:
    """Thread-safe JSON-lines sink; listeners see every event (metrics, tests)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        stdout: bool = False,
        node: str | None = None,
    ) -> None:
        self.path = path = None if path is None else Path(path)
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


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of an event log file (for tests and `modelcache` tooling)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
