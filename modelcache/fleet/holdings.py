"""What this node can serve to its peers besides complete blobs: the blobs it is
downloading now, and which of their pieces are verified (written and checked against the
publisher's digest), so a peer can take a piece before the whole file is here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Self

BlobLocator = Callable[[str], Path | None]
"""sha256 -> the path of the complete blob this node holds, or None (given by the agent,
from its store's blobs/)."""


class Holding(NamedTuple):
    """A blob in flight as the server sees it at one instant."""

    path: Path
    size: int
    piece_size: int
    verified: frozenset[int]


@dataclass(eq=False)
class InFlightBlob:
    """The handle of one download: tell it each piece verified, and `end()` it (or use it
    as a context manager) when the download stops, done or not."""

    sha256: str
    path: Path
    size: int
    piece_size: int
    _registry: InFlight
    _verified: set[int] = field(default_factory=set)

    @property
    def piece_count(self) -> int:
        return max(1, -(-self.size // self.piece_size))

    def verified(self, index: int) -> None:
        """Piece `index` is on disk and matched its digest: peers may have it now."""
        if not 0 <= index < self.piece_count:
            raise ValueError(f"piece {index} of a {self.piece_count}-piece blob")
        with self._registry._lock:
            self._verified.add(index)

    def end(self) -> None:
        self._registry._end(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


class InFlight:
    """The blobs being downloaded on this node, thread-safe. A second `begin` for a blob
    takes over from the first (whose `end` then does nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, InFlightBlob] = {}

    def begin(self, sha256: str, path: Path, size: int, piece_size: int) -> InFlightBlob:
        if size < 0 or piece_size <= 0:
            raise ValueError(f"size {size}, piece size {piece_size}")
        handle = InFlightBlob(sha256, path, size, piece_size, self)
        with self._lock:
            self._blobs[sha256] = handle
        return handle

    def lookup(self, sha256: str) -> Holding | None:
        with self._lock:
            handle = self._blobs.get(sha256)
            if handle is None:
                return None
            verified = frozenset(handle._verified)
        return Holding(handle.path, handle.size, handle.piece_size, verified)

    def _end(self, handle: InFlightBlob) -> None:
        with self._lock:
            if self._blobs.get(handle.sha256) is handle:
                del self._blobs[handle.sha256]
