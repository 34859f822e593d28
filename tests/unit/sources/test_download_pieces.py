"""Per-piece verification over file:// (real files, no server): a piece is checked against the
publisher's digest before the record claims it, a bad one is fetched again, and one that
stays bad fails the download naming it while the pieces that matched stay resumable."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache.api.manifest import MIN_PIECE, ManifestFile, Pieces, piece_size_for
from modelcache.fs import StreamHasher
from modelcache.sources import (
    PullCancelled,
    PullOptions,
    VerificationError,
    download_file,
    parse_source_url,
)
from modelcache.sources.download import PIECE_REFETCHES
from modelcache.sources.local import LocalClient
from modelcache.sources.pieces import Piece, PieceRead, PieceSource
from modelcache.sources.resume import ResumeRecord, load_record, resume_path

KEY = "v1/unet/48.safetensors"
PATH = "unet/48.safetensors"
PIECE = MIN_PIECE
SIZE = 3 * PIECE + 4321  # four pieces, the last one short


def pieced_entry(data: bytes) -> ManifestFile:
    """The entry publish writes for `data`: with the sha256 of each of its pieces."""
    hasher = StreamHasher(piece_size_for(len(data)))
    hasher.update(data)
    digest = hasher.digest()
    return ManifestFile(
        path=PATH,
        size=digest.size,
        sha256=digest.sha256,
        crc64=str(digest.crc64),
        pieces=Pieces(size=piece_size_for(len(data)), sha256=digest.pieces),
    )


def plain_entry(data: bytes) -> ManifestFile:
    """The entry a schema-1 manifest has: no pieces."""
    return pieced_entry(data).model_copy(update={"pieces": None})


class Flipping(LocalClient):
    """A directory whose reads flip one byte at `offset` the first `times` reads that cover it
    (a bit flipped on the way from the store), and that records where each read began."""

    def __init__(self, root: Path, offset: int = -1, times: int = 0) -> None:
        super().__init__(parse_source_url(f"file://{root}"))
        self.offset = offset
        self.times = times
        self.starts: list[int] = []
        self._lock = threading.Lock()

    def iter_range(
        self, key: str, start: int, end: int, *, etag: str | None = None, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        with self._lock:
            self.starts.append(start)
            corrupt = start <= self.offset < end and self.times > 0
            self.times -= corrupt
        position = start
        for data in super().iter_range(key, start, end, etag=etag, chunk=chunk):
            sent = bytearray(data)
            if corrupt and position <= self.offset < position + len(data):
                sent[self.offset - position] ^= 0x01
            position += len(data)
            yield bytes(sent)

    def reads_of(self, index: int, piece_size: int = PIECE) -> int:
        """How many reads began at the start of piece `index`."""
        return self.starts.count(index * piece_size)


class Verified:
    """`on_verified_piece`: the pieces it was told of, in order."""

    def __init__(self) -> None:
        self.indexes: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, index: int) -> None:
        with self._lock:
            self.indexes.append(index)


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)


def stored(tmp_path: Path, data: bytes, offset: int = -1, times: int = 0) -> Flipping:
    client = Flipping(tmp_path / "l3", offset, times)
    client.put_bytes(KEY, data)
    return client


def test_a_piece_corrupted_once_on_the_way_is_fetched_again_and_the_file_is_right(
    tmp_path: Path, data: bytes
) -> None:
    client = stored(tmp_path, data, offset=2 * PIECE + 17, times=1)
    dest, verified = tmp_path / "blob", Verified()
    options = PullOptions(concurrency=4, part_size=64 * 1024)  # pieces win over part_size
    digest = download_file(
        client, KEY, pieced_entry(data), dest, options=options, on_verified_piece=verified
    )
    assert dest.read_bytes() == data
    assert digest.sha256 == pieced_entry(data).sha256
    assert client.reads_of(2) == 2, "the bad piece, and only it, was fetched again from zero"
    assert [client.reads_of(i) for i in (0, 1, 3)] == [1, 1, 1]
    assert sorted(verified.indexes) == [0, 1, 2, 3], "each piece announced once, once checked"
    assert not resume_path(dest).exists()


def test_a_piece_that_is_always_corrupted_fails_naming_it_and_is_never_claimed(
    tmp_path: Path, data: bytes
) -> None:
    """One piece at a time, in order: pieces 0 and 1 match and are claimed, 2 never is
    (3 may be, if the worker took it before the failure stopped the download)."""
    client = stored(tmp_path, data, offset=2 * PIECE + 5, times=1000)
    dest, verified = tmp_path / "blob", Verified()
    options = PullOptions(concurrency=1)
    with pytest.raises(VerificationError) as failed:
        download_file(
            client, KEY, pieced_entry(data), dest, options=options, on_verified_piece=verified
        )
    assert failed.value.piece == 2
    assert failed.value.expected == pieced_entry(data).pieces.sha256[2]  # type: ignore[union-attr]
    assert f"{PATH}: piece 2 sha256 mismatch" in str(failed.value)
    assert client.reads_of(2) == 1 + PIECE_REFETCHES
    assert verified.indexes[:2] == [0, 1]
    assert 2 not in verified.indexes
    record = load_record(resume_path(dest))
    assert record is not None, "the pieces that matched stay resumable"
    assert {0, 1} <= record.done
    assert 2 not in record.done
    assert 2 not in record.started()

    client.times, client.starts = 0, []  # the link is mended: only what is missing is fetched
    download_file(client, KEY, pieced_entry(data), dest, options=options)
    assert dest.read_bytes() == data
    assert sorted(client.starts) == [i * PIECE for i in range(4) if i not in record.done]


def test_a_cancelled_pieced_download_resumes_where_it_stopped(tmp_path: Path, data: bytes) -> None:
    """Stopped mid-piece (as by SIGTERM): the record claims what was on disk, and the resumed
    download fetches only the rest, hashing a started piece's bytes on disk first."""
    client = stored(tmp_path, data)
    dest, cancel = tmp_path / "blob", threading.Event()
    received = 0

    def stop_midway(nbytes: int) -> None:
        nonlocal received
        received += nbytes
        if received >= PIECE + PIECE // 2:  # in the middle of piece 1
            cancel.set()

    options = PullOptions(concurrency=1, part_size=64 * 1024)
    with pytest.raises(PullCancelled):
        download_file(
            client,
            KEY,
            pieced_entry(data),
            dest,
            options=options,
            progress=stop_midway,
            cancel=cancel,
        )
    record = load_record(resume_path(dest))
    assert record is not None
    assert record.part_size == PIECE
    assert record.done == {0}
    started = record.started()
    assert 0 < started.get(1, 0) < PIECE, "the first bytes of the piece in flight are claimed"

    fetched, verified = [0], Verified()
    download_file(
        client,
        KEY,
        pieced_entry(data),
        dest,
        options=options,
        progress=lambda n: fetched.__setitem__(0, fetched[0] + n),
        on_verified_piece=verified,
    )
    assert dest.read_bytes() == data
    assert fetched[0] == SIZE - PIECE - started[1]
    assert sorted(verified.indexes) == [0, 1, 2, 3]


def test_a_resumed_piece_whose_bytes_on_disk_are_wrong_is_fetched_again_from_zero(
    tmp_path: Path, data: bytes
) -> None:
    """The record says piece 1 has its first bytes on disk, but the disk holds others (a lost
    write): the piece is hashed from its start, fails, and is fetched whole."""
    client = stored(tmp_path, data)
    dest = tmp_path / "blob"
    held = PIECE // 3
    with dest.open("wb") as partial:
        partial.truncate(SIZE)
        partial.write(data[:PIECE])
        partial.write(b"\0" * held)  # piece 1's first bytes: wrong
    etag = client.head(KEY).etag
    record = ResumeRecord(KEY, etag, SIZE, PIECE, frozenset({0}), ((1, held),))
    resume_path(dest).write_bytes(record.to_json())
    download_file(client, KEY, pieced_entry(data), dest, options=PullOptions(concurrency=2))
    assert dest.read_bytes() == data
    assert client.starts.count(PIECE + held) == 1, "the resumed read after its first bytes"
    assert client.reads_of(1) == 1, "then the piece again from zero"
    assert client.reads_of(0) == 0, "a claimed piece is not fetched"


def test_a_schema_1_entry_downloads_in_parts_of_part_size_as_before(
    tmp_path: Path, data: bytes
) -> None:
    client = stored(tmp_path, data)
    dest = tmp_path / "blob"
    part_size = 1024 * 1024
    download_file(client, KEY, plain_entry(data), dest, options=PullOptions(part_size=part_size))
    assert dest.read_bytes() == data
    assert sorted(client.starts) == list(range(0, SIZE, part_size))


def test_a_schema_1_entry_with_a_corrupted_part_fails_on_the_whole_file(
    tmp_path: Path, data: bytes
) -> None:
    """Without pieces nothing is checked per part: the whole file's sha256 catches it."""
    client = stored(tmp_path, data, offset=PIECE + 3, times=1)
    with pytest.raises(VerificationError) as failed:
        download_file(client, KEY, plain_entry(data), tmp_path / "blob")
    assert (failed.value.what, failed.value.piece) == ("sha256", None)


class BadPeer:
    """A piece source that sends the piece with its first byte changed (a lying peer)."""

    def __init__(self, client: LocalClient) -> None:
        self.client = client
        self.reads = 0

    def describe(self) -> str:
        return "peer node-b"

    def read(self, piece: Piece, offset: int, chunk: int) -> Iterator[bytes]:
        self.reads += 1
        data = bytearray(b"".join(self.client.iter_range(KEY, piece.start + offset, piece.end)))
        data[0] ^= 0xFF
        yield bytes(data)


def test_a_router_picks_each_reads_source_and_learns_which_one_sent_bad_bytes(
    tmp_path: Path, data: bytes
) -> None:
    """The seam peers plug into: piece 1 is read from a peer first; its bytes fail the
    publisher's digest, so the router sends the refetch to L3, and the file is right."""
    client = stored(tmp_path, data)
    peer = BadPeer(client)
    reads: list[PieceRead] = []
    lock = threading.Lock()

    def route(read: PieceRead) -> PieceSource:
        with lock:
            reads.append(read)
        if read.piece.index == 1 and not read.mismatched:
            return peer
        return read.l3

    dest = tmp_path / "blob"
    download_file(client, KEY, pieced_entry(data), dest, route=route)
    assert dest.read_bytes() == data
    assert peer.reads == 1
    of_piece_1 = [r for r in reads if r.piece.index == 1]
    assert [r.mismatched for r in of_piece_1] == [(), ("peer node-b",)]
    assert all(r.piece.sha256 == pieced_entry(data).pieces.sha256[r.piece.index] for r in reads)  # type: ignore[union-attr]


def test_a_router_that_always_picks_a_bad_peer_fails_naming_the_peer(
    tmp_path: Path, data: bytes
) -> None:
    client = stored(tmp_path, data)
    peer = BadPeer(client)
    with pytest.raises(VerificationError) as failed:
        download_file(
            client,
            KEY,
            pieced_entry(data),
            tmp_path / "blob",
            route=lambda read: peer if read.piece.index == 3 else read.l3,
        )
    assert failed.value.piece == 3
    assert "(from peer node-b)" in str(failed.value)
