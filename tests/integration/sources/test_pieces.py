"""Piece digests end to end on real stores: publish records them as the store holds the
file, and a seed whose bytes from L3 are corrupted on the way is caught at the bad piece,
never keeping those bytes."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from modelcache.api.manifest import MIN_PIECE, ManifestFile, piece_size_for
from modelcache.sources import (
    DOCUMENT_LIMIT,
    ObjectClient,
    ObjectInfo,
    Progress,
    PullOptions,
    VerificationError,
    download_file,
    publish,
    read_manifest,
)
from modelcache.sources.download import PIECE_REFETCHES
from modelcache.sources.resume import load_record, resume_path
from modelcache.testing import ObjectStore
from tests.integration.sources.conftest import make_location

MiB = 1024 * 1024


def piece_digests(data: bytes, piece_size: int) -> tuple[str, ...]:
    return tuple(
        hashlib.sha256(data[start : start + piece_size]).hexdigest()
        for start in range(0, len(data), piece_size)
    )


@pytest.mark.parametrize("scheme", ["oss", "s3", "file"])
def test_a_published_manifest_has_pieces_that_match_the_stored_file(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    location = make_location(scheme, store_env, tmp_path, http_root)
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    weights = os.urandom(3 * MIN_PIECE + 777)
    (model / "unet" / "w.safetensors").write_bytes(weights)
    (model / "config.json").write_text('{"layers": 48}')
    publish(location.client, model, "v1")

    manifest = read_manifest(location.client, "v1")
    assert manifest.schema_version == 2
    entry = manifest.file("unet/w.safetensors")
    assert entry.pieces is not None
    assert entry.pieces.size == piece_size_for(len(weights))
    stored = location.client.get_bytes("v1/unet/w.safetensors", limit=len(weights))
    assert stored == weights
    assert entry.pieces.sha256 == piece_digests(stored, entry.pieces.size)
    assert manifest.file("config.json").pieces is None


class CorruptingLink(ObjectClient):
    """The real client of a store, whose ranged reads come back with the byte at each of
    `offsets` flipped, for the first `times` reads covering it: bytes corrupted on the way
    from L3 (a bad NIC, a proxy), after the store's own checks."""

    def __init__(self, inner: ObjectClient, offsets: Sequence[int], times: int) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.left = dict.fromkeys(offsets, times)
        self.corrupted: list[int] = []  # offsets flipped, in order
        self._lock = threading.Lock()

    def iter_range(
        self, key: str, start: int, end: int, *, etag: str | None = None, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        with self._lock:
            hit = [o for o, n in self.left.items() if start <= o < end and n > 0]
            for offset in hit:
                self.left[offset] -= 1
                self.corrupted.append(offset)
        position = start
        for data in self.inner.iter_range(key, start, end, etag=etag, chunk=chunk):
            sent = bytearray(data)
            for offset in hit:
                if position <= offset < position + len(data):
                    sent[offset - position] ^= 0x40
            position += len(data)
            yield bytes(sent)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def get_bytes(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes:
        return self.inner.get_bytes(key, limit=limit)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.inner.put_bytes(key, data)

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        return self.inner.put_bytes_if_absent(key, data)

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        self.inner.put_file(key, path, progress=progress)

    def delete(self, keys: Sequence[str]) -> None:
        self.inner.delete(keys)

    def describe(self, key: str) -> str:
        return self.inner.describe(key)


def published(
    scheme: str, store: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> tuple[ObjectClient, ManifestFile, bytes]:
    """A 4-piece file published to the store with `modelcache publish`: its client and entry."""
    location = make_location(scheme, store, tmp_path, http_root)
    model = tmp_path / "model"
    model.mkdir()
    data = os.urandom(3 * MIN_PIECE + 4096)
    (model / "w.bin").write_bytes(data)
    manifest = publish(location.client, model, "v1")
    return location.client, manifest.file("w.bin"), data


@pytest.mark.parametrize("scheme", ["oss", "s3"])
def test_a_seed_that_read_corrupted_bytes_from_l3_is_caught_at_the_bad_piece_and_heals(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """One read of piece 2 comes back with a flipped bit: that piece alone is fetched again,
    and the file is the published one (the flipped byte was never hashed into the file)."""
    client, entry, data = published(scheme, store_env, tmp_path, http_root)
    link = CorruptingLink(client, [2 * MIN_PIECE + 123], times=1)
    dest = tmp_path / "blob"
    digest = download_file(link, "v1/w.bin", entry, dest, options=PullOptions(concurrency=4))
    assert link.corrupted == [2 * MIN_PIECE + 123]
    assert dest.read_bytes() == data
    assert digest.sha256 == entry.sha256


@pytest.mark.parametrize("scheme", ["oss", "s3"])
def test_a_seed_that_keeps_reading_corrupted_bytes_fails_at_the_first_bad_piece(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """Pieces 1 and 3 always arrive corrupted; fetched in order, the pull stops at piece 1
    after 1 + PIECE_REFETCHES tries and claims none of its bytes (nor ever piece 3's)."""
    client, entry, data = published(scheme, store_env, tmp_path, http_root)
    bad = [MIN_PIECE + 9, 3 * MIN_PIECE + 9]
    link = CorruptingLink(client, bad, times=100)
    dest = tmp_path / "blob"
    with pytest.raises(VerificationError) as failed:
        download_file(link, "v1/w.bin", entry, dest, options=PullOptions(concurrency=1))
    assert failed.value.piece == 1
    assert "w.bin: piece 1 sha256 mismatch" in str(failed.value)
    assert client.describe("v1/w.bin") in str(failed.value)
    assert link.corrupted[: 1 + PIECE_REFETCHES] == [bad[0]] * (1 + PIECE_REFETCHES)
    record = load_record(resume_path(dest))
    assert record is not None
    assert 0 in record.done, "the piece before it matched and is kept"
    assert not {1, 3} & record.done
    assert 1 not in record.started()

    link.left = {}  # the link is mended: the next pull fetches the rest and is right
    download_file(link, "v1/w.bin", entry, dest, options=PullOptions(concurrency=1))
    assert dest.read_bytes() == data
