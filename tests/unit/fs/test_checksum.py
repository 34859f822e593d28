"""The verify path computes the same CRC-64 that OSS returns, and the same sha256 as hashlib."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.fs import StreamHasher, crc64_xz, hash_file


def crc64_xz_reference(data: bytes) -> int:
    """Bit-by-bit CRC-64/XZ (reflected ECMA-182 polynomial, init and xorout all ones)."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def test_catalogue_check_value() -> None:
    assert crc64_xz(b"123456789") == 0x995DC9BBDF1939FA
    assert crc64_xz(b"") == 0


@given(st.binary(max_size=2048), st.integers(0, 2048))
def test_streaming_equals_one_shot_and_the_reference(data: bytes, cut: int) -> None:
    hasher = StreamHasher()
    hasher.update(data[:cut])
    hasher.update(memoryview(data)[cut:])
    digest = hasher.digest()
    assert digest.crc64 == crc64_xz(data) == crc64_xz_reference(data)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.size == len(data)


@settings(max_examples=20)
@given(st.binary(max_size=50_000), st.integers(1, 9000))
def test_hash_file_any_chunking(tmp_path_factory: object, data: bytes, chunk: int) -> None:
    directory = tmp_path_factory.mktemp("h")  # type: ignore[attr-defined]
    path: Path = directory / "f"
    path.write_bytes(data)
    digest = hash_file(path, chunk=chunk)
    assert (digest.size, digest.sha256, digest.crc64) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        crc64_xz_reference(data),
    )


def pieces_reference(data: bytes, piece_size: int) -> tuple[str, ...]:
    """Each piece hashed on its own: what a downloader checks a piece against."""
    return tuple(
        hashlib.sha256(data[start : start + piece_size]).hexdigest()
        for start in range(0, len(data), piece_size)
    )


@given(
    st.binary(max_size=4096),
    st.integers(1, 600),
    st.lists(st.integers(0, 4096), max_size=6),
)
def test_piece_digests_are_each_piece_hashed_alone_however_the_stream_is_cut(
    data: bytes, piece_size: int, cuts: list[int]
) -> None:
    hasher = StreamHasher(piece_size)
    bounds = [0, *sorted(cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        hasher.update(memoryview(data)[start:end])
    digest = hasher.digest()
    assert digest.pieces == pieces_reference(data, piece_size)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.crc64 == crc64_xz(data)


def test_without_a_piece_size_there_are_no_piece_digests() -> None:
    hasher = StreamHasher()
    hasher.update(b"x" * 100)
    assert hasher.digest().pieces == ()


@settings(max_examples=20)
@given(st.binary(max_size=50_000), st.integers(1, 9000), st.integers(1, 20_000))
def test_hash_file_gives_the_pieces_from_the_same_read(
    tmp_path_factory: object, data: bytes, chunk: int, piece_size: int
) -> None:
    directory = tmp_path_factory.mktemp("p")  # type: ignore[attr-defined]
    path: Path = directory / "f"
    path.write_bytes(data)
    digest = hash_file(path, chunk=chunk, piece_size=piece_size)
    assert digest.pieces == pieces_reference(data, piece_size)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
