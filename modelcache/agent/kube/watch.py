"""A watch's stream: newline-separated JSON events, cut anywhere by the network, each bounded."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from modelcache.agent.kube.errors import ApiError


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


def watch_events(chunks: Iterable[bytes]) -> Iterator[WatchEvent]:
    """The events of a watch's body; an ERROR event raises `ApiError` with its code
    (410, Gone: the version is too old and the caller must list again)."""
    for line in iter_lines(chunks):
        event = json.loads(line)
        kind = str(event.get("type", ""))
        obj = event.get("object") or {}
        if kind == "ERROR":
            raise ApiError(
                int(obj.get("code") or 500),
                str(obj.get("reason") or "watch error"),
                str(obj.get("message") or ""),
            )
        yield WatchEvent(kind, obj)


MAX_WATCH_LINE = 4 * 1024 * 1024  # one watch event: an object (etcd keeps each under 1.5 MiB)


def iter_lines(chunks: Iterable[bytes], limit: int = MAX_WATCH_LINE) -> Iterator[bytes]:
    """Whole non-empty lines from a stream of chunks that split lines anywhere; each chunk
    is scanned once (linear), and a line past `limit` is an ApiError, not memory."""
    pending: list[bytes] = []
    held = 0
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending.append(chunk[start:end])
            line = b"".join(pending)
            pending, held = [], 0
            if line.strip():
                yield line
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
            held += len(chunk) - start
            if held > limit:
                raise ApiError(0, f"a watch event over {limit:,} bytes")
    line = b"".join(pending)
    if line.strip():
        yield line
