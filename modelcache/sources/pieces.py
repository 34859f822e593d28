"""Where the bytes of one piece of a download come from: the seam between the downloader and
whatever serves pieces (L3 by default; peers plug in here through a `PieceRouter`).

The downloader cuts a file into `Piece`s: for a manifest entry with `pieces`, those pieces,
each with the publisher's sha256; for an older (schema 1) entry, parts of
`PullOptions.part_size` with no digest of their own, checked with the whole file. Every read
of a piece asks the router for a `PieceSource`; whatever it picks, the bytes are checked
against the publisher's digest before the piece counts as done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from modelcache.api.manifest import ManifestFile
from modelcache.sources.base import ObjectClient
from modelcache.sources.resume import Part, plan_parts


@dataclass(frozen=True)
class Piece(Part):
    """Bytes [start, end) of the file, and the sha256 they must hash to (None: a schema-1
    part, verified only with the whole file)."""

    sha256: str | None = None


class PieceSource(Protocol):
    """Something that can send the bytes of a piece."""

    def describe(self) -> str:
        """Where the bytes come from, for messages (`s3://bucket/prefix/v1/x`, a peer's name)."""
        ...

    def read(self, piece: Piece, offset: int, chunk: int) -> Iterator[bytes]:
        """Bytes [piece.start + offset, piece.end) in chunks of about `chunk` bytes; never more.
        Raises SourceUnreachable for what a retry may cure (the read resumes at the last byte
        received), ObjectChanged when L3's object is no longer the version pinned."""
        ...


@dataclass(frozen=True)
class ObjectPieces:
    """The default source: the object in L3, every read pinned to the ETag HEAD saw."""

    client: ObjectClient
    key: str
    etag: str

    def describe(self) -> str:
        return self.client.describe(self.key)

    def read(self, piece: Piece, offset: int, chunk: int) -> Iterator[bytes]:
        return self.client.iter_range(
            self.key, piece.start + offset, piece.end, etag=self.etag, chunk=chunk
        )


@dataclass(frozen=True)
class PieceRead:
    """A read of one piece about to begin: what a router decides on."""

    piece: Piece
    offset: int  # bytes of the piece already held: the read continues after them
    mismatched: tuple[str, ...]  # the sources whose bytes of this piece failed its digest
    l3: ObjectPieces  # the object in L3, the source when nothing better is known
    stopping: Callable[[], bool] = lambda: False  # the download is stopping: stop waiting


PieceRouter = Callable[[PieceRead], PieceSource]
"""Picks the source of each read of a piece: called when a piece starts, after a transient
failure (a read that continues at `offset`) and after a digest mismatch (from zero). Called
from the download's worker threads, so it must be thread-safe."""


def from_l3(read: PieceRead) -> PieceSource:
    """The default router: every piece from L3."""
    return read.l3


def plan_pieces(expected: ManifestFile, part_size: int) -> list[Piece]:
    """The pieces of `expected`: the publisher's, with their digests, when the manifest has
    them (whatever `part_size` says); otherwise parts of `part_size` without digests."""
    if expected.pieces is None:
        return [Piece(p.index, p.start, p.end) for p in plan_parts(expected.size, part_size)]
    digests = expected.pieces.sha256
    parts = plan_parts(expected.size, expected.pieces.size)
    return [Piece(p.index, p.start, p.end, digests[p.index]) for p in parts]


def part_size_of(expected: ManifestFile, part_size: int) -> int:
    """The part size a download of `expected` uses (and its resume record records)."""
    return part_size if expected.pieces is None else expected.pieces.size
