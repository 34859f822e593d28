"""Piece digests in the manifest (schema 2): what publish writes parses back unchanged, and a
piece list that cannot describe its file is refused before anything is downloaded."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelcache.api.manifest import (
    MAX_PIECE,
    MIN_PIECE,
    PIECES_PER_FILE,
    Manifest,
    ManifestFile,
    MiB,
    Pieces,
    piece_count,
    piece_size_for,
)

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
PIECE_SIZES = st.sampled_from([MIN_PIECE << shift for shift in range(5)])


def digest(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def pieced(
    path: str, size: int, piece_size: int, digests: list[str] | None = None
) -> dict[str, object]:
    count = piece_count(size, piece_size)
    return {
        "path": path,
        "size": size,
        "sha256": digest(size),
        "crc64": "7",
        "pieces": {
            "size": piece_size,
            "sha256": [digest(i) for i in range(count)] if digests is None else digests,
        },
    }


# -- the piece size ----------------------------------------------------------------------------


@given(st.integers(0, 2**50))
def test_piece_size_is_the_smallest_power_of_two_within_bounds(size: int) -> None:
    chosen = piece_size_for(size)
    assert chosen & (chosen - 1) == 0
    assert MIN_PIECE <= chosen <= MAX_PIECE
    if chosen < MAX_PIECE:  # at most 512 pieces, and half the size would need more
        assert piece_count(size, chosen) <= PIECES_PER_FILE
        assert chosen == MIN_PIECE or piece_count(size, chosen // 2) > PIECES_PER_FILE
    else:
        assert piece_count(size, MAX_PIECE // 2) > PIECES_PER_FILE


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, MIN_PIECE),
        (5 * MiB, MIN_PIECE),
        (2048 * MiB, MIN_PIECE),  # 512 pieces of 4 MiB exactly
        (2048 * MiB + 1, 8 * MiB),
        (10 * 1024 * MiB, 32 * MiB),  # a 10 GiB shard: 320 pieces
        (32 * 1024 * MiB, MAX_PIECE),
        (1024 * 1024 * MiB, MAX_PIECE),  # 1 TiB: 16,384 pieces of the largest size
    ],
)
def test_piece_sizes_of_typical_files(size: int, expected: int) -> None:
    assert piece_size_for(size) == expected


def test_a_negative_size_has_no_piece_size() -> None:
    with pytest.raises(ValueError, match="negative"):
        piece_size_for(-1)


# -- the entries -------------------------------------------------------------------------------


@st.composite
def entries(draw: st.DrawFn) -> ManifestFile:
    piece_size = draw(PIECE_SIZES)
    count = draw(st.integers(2 if piece_size == MIN_PIECE else 1, 40))  # > MIN_PIECE bytes
    size = draw(st.integers(max(MIN_PIECE + 1, (count - 1) * piece_size + 1), count * piece_size))
    digests = draw(
        st.lists(
            HEX, min_size=piece_count(size, piece_size), max_size=piece_count(size, piece_size)
        )
    )
    return ManifestFile.model_validate(
        pieced(f"f{draw(st.integers(0, 10**6))}", size, piece_size, digests)
    )


@settings(max_examples=200)
@given(
    st.lists(entries(), max_size=5, unique_by=lambda e: e.path),
    st.lists(st.integers(0, MIN_PIECE), max_size=3),
)
def test_a_schema_2_manifest_round_trips(
    pieced_files: list[ManifestFile], small: list[int]
) -> None:
    plain = [
        ManifestFile(path=f"small/{i}", size=size, sha256=digest(size), crc64="1")
        for i, size in enumerate(small)
    ]
    original = Manifest(version="v2", created=NOW, files=(*pieced_files, *plain))
    document = original.to_json()
    assert Manifest.from_json(document) == original
    assert json.loads(document)["schemaVersion"] == 2
    for entry, raw in zip(original.files, json.loads(document)["files"], strict=True):
        assert ("pieces" in raw) == (entry.pieces is not None)  # omitted when there are none
        assert entry.piece_count() == (len(entry.pieces.sha256) if entry.pieces else 1)


@given(PIECE_SIZES, st.integers(1, 40), st.integers(-3, 3).filter(bool))
def test_a_wrong_number_of_piece_digests_is_refused(piece_size: int, count: int, off: int) -> None:
    size = max(MIN_PIECE + 1, count * piece_size)
    right = piece_count(size, piece_size)
    digests = [digest(i) for i in range(max(0, right + off))]
    if len(digests) == right:
        return
    with pytest.raises(ValidationError, match=f"{len(digests)} piece digests, but {size} bytes"):
        ManifestFile.model_validate(pieced("w.bin", size, piece_size, digests))


@given(
    st.integers(1, 2 * MAX_PIECE).filter(lambda n: n & (n - 1) or not MIN_PIECE <= n <= MAX_PIECE)
)
def test_a_piece_size_that_is_not_a_power_of_two_within_bounds_is_refused(size: int) -> None:
    with pytest.raises(ValidationError, match="not a power of two"):
        Pieces(size=size, sha256=(digest(0),))


@given(
    st.text(max_size=70).filter(lambda t: not (len(t) == 64 and set(t) <= set("0123456789abcdef")))
)
def test_a_piece_digest_that_is_not_lowercase_hex_sha256_is_refused(bad: str) -> None:
    digests = [digest(0), bad]
    with pytest.raises(ValidationError, match="pattern"):
        ManifestFile.model_validate(pieced("w.bin", MIN_PIECE + 1, MIN_PIECE, digests))


def test_a_small_file_has_no_pieces() -> None:
    with pytest.raises(ValidationError, match="it has no pieces"):
        ManifestFile.model_validate(pieced("w.bin", MIN_PIECE, MIN_PIECE, [digest(0)]))


def test_pieces_in_a_schema_1_manifest_are_refused() -> None:
    document = {"schemaVersion": 1, "version": "v1", "created": NOW.isoformat()}
    document["files"] = [pieced("w.bin", MIN_PIECE + 1, MIN_PIECE)]
    with pytest.raises(ValidationError, match="schema 1 does not know"):
        Manifest.from_json(json.dumps(document))


def test_a_schema_1_manifest_as_an_older_publish_wrote_it_still_parses() -> None:
    """Byte for byte what publish wrote before pieces: files of any size, no pieces."""
    written_before = (
        b'{\n  "schemaVersion": 1,\n  "version": "v1",\n  "created": "2026-11-24T10:00:00Z",\n'
        b'  "files": [\n    {\n      "path": "unet/48.safetensors",\n      "size": 10737418240,\n'
        b'      "sha256": "' + digest(1).encode() + b'",\n      "crc64": "18446744073709551615"\n'
        b"    }\n  ]\n}"
    )
    manifest = Manifest.from_json(written_before)
    assert manifest.schema_version == 1
    (entry,) = manifest.files
    assert entry.pieces is None
    assert entry.piece_count() == 1
    assert b'"pieces"' not in manifest.to_json()
    assert Manifest.from_json(manifest.to_json()) == manifest  # still schema 1 once re-written


@pytest.mark.parametrize("version", [0, 3, "2"])
def test_unknown_schema_versions_are_refused(version: object) -> None:
    document = {"schemaVersion": version, "version": "v1", "created": NOW.isoformat(), "files": []}
    with pytest.raises(ValidationError, match="schemaVersion"):
        Manifest.from_json(json.dumps(document))


@pytest.mark.timeout(120)  # a hang guard
def test_a_manifest_with_half_a_million_piece_digests_is_validated_in_linear_time() -> None:
    """1,000 files of 32 GiB: 512 pieces each. Pydantic checks each digest once."""
    files = [
        pieced(f"shard-{i:04d}", 32 * 1024 * MiB, MAX_PIECE, [digest(i)] * 512) for i in range(1000)
    ]
    manifest = Manifest.model_validate(
        {"version": "v1", "created": NOW.isoformat(), "files": files}
    )
    assert sum(f.piece_count() for f in manifest.files) == 512_000
