"""The L3 manifest: what a published version holds, with a size, sha256 and CRC-64/XZ per file,
and for a file larger than MIN_PIECE the sha256 of each of its pieces (schema 2).

Written last by `modelcache publish`, so a version without a manifest does not
exist yet; read by every agent, so every field is checked on the way in. Piece digests
come from the publisher, so a downloader checks each piece against the content itself,
whoever sent it (L3 or a peer).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from modelcache.api.names import check_relative_path, check_version

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.json"
SHA256_HEX = r"^[0-9a-f]{64}$"
CRC64_MAX = 2**64 - 1
MiB = 1024 * 1024

MANIFEST_MAX_BYTES = 32 * MiB
"""A manifest's cap, checked before a byte is parsed. An entry takes about 180 bytes plus its
path as `publish` writes it, so 32 MiB holds 100,000 files whose paths average up to 150
characters (typical ones are under 80: 26 MB). The most entries it can hold (~175,000 with
short paths) parse into about 150 MiB, inside the agent's 256 MiB memory limit. A piece
digest takes 78 bytes: the cap also holds some 400,000 pieces (780 files of 32 GiB each, 25 TB
of 16 MiB pieces; see `piece_size_for`)."""

INDEX_MAX_BYTES = 4 * MiB
"""`index.json`'s cap: an entry takes about 180 bytes with a 20-character version name, so
4 MiB lists ~23,000 versions (one an hour for two and a half years)."""

MIN_PIECE = 4 * MiB
"""The smallest piece; a file of at most this many bytes has none (its one piece is verified
by the file's own sha256), which keeps a manifest of 100,000 small files under its cap."""
MAX_PIECE = 64 * MiB
"""The largest piece: what one peer request moves, and the most a bad piece costs to refetch."""
PIECES_PER_FILE = 512
"""Up to MAX_PIECE * PIECES_PER_FILE (32 GiB) a file has at most this many pieces (as
Dragonfly's size/500, but a power of two); a larger one has more pieces of MAX_PIECE."""

_SEPARATOR_KEY = "\x00"  # sorts before every character a path may hold (control ones are refused)


def piece_size_for(file_size: int) -> int:
    """The piece size publish gives a file: the smallest power of two that cuts it into at
    most PIECES_PER_FILE pieces, clamped to [MIN_PIECE, MAX_PIECE]."""
    if file_size < 0:
        raise ValueError(f"a file size cannot be negative, not {file_size}")
    wanted = -(-file_size // PIECES_PER_FILE)
    size = 1 << max(0, wanted - 1).bit_length()
    return min(MAX_PIECE, max(MIN_PIECE, size))


def piece_count(file_size: int, piece_size: int) -> int:
    """How many pieces of `piece_size` bytes cover `file_size` bytes (the last may be shorter)."""
    return -(-file_size // piece_size)


class Pieces(BaseModel):
    """A file cut into `size`-byte pieces (the last one shorter), with each piece's sha256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int
    sha256: tuple[Annotated[str, Field(pattern=SHA256_HEX)], ...]

    @field_validator("size")
    @classmethod
    def _power_of_two_in_range(cls, value: int) -> int:
        if not MIN_PIECE <= value <= MAX_PIECE or value & (value - 1):
            raise ValueError(
                f"piece size {value} is not a power of two from {MIN_PIECE} to {MAX_PIECE}"
            )
        return value


class ManifestFile(BaseModel):
    """One file of a version. `crc64` is CRC-64/XZ, as OSS's x-oss-hash-crc64ecma (decimal).
    `pieces` is set for a file larger than MIN_PIECE published by schema 2, else None."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=SHA256_HEX)]
    crc64: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]
    pieces: Pieces | None = Field(None, exclude_if=lambda value: value is None)

    def piece_count(self) -> int:
        """How many pieces a downloader verifies one by one: 1 (the whole file) without pieces."""
        return 1 if self.pieces is None else piece_count(self.size, self.pieces.size)

    @model_validator(mode="after")
    def _pieces_cover_the_file(self) -> ManifestFile:
        """One digest per piece (a count check: linear in the digests already parsed)."""
        if self.pieces is None:
            return self
        if self.size <= MIN_PIECE:
            raise ValueError(
                f"{self.path!r} has {self.size} bytes, at most {MIN_PIECE}: it has no pieces"
            )
        wanted = piece_count(self.size, self.pieces.size)
        if len(self.pieces.sha256) != wanted:
            raise ValueError(
                f"{self.path!r} has {len(self.pieces.sha256)} piece digests, but {self.size} "
                f"bytes in pieces of {self.pieces.size} make {wanted}"
            )
        return self

    @field_validator("path")
    @classmethod
    def _safe_path(cls, value: str) -> str:
        return check_relative_path(value)

    @field_validator("crc64")
    @classmethod
    def _crc_in_range(cls, value: str) -> str:
        if int(value) > CRC64_MAX:
            raise ValueError(f"crc64 {value} does not fit in 64 bits")
        return str(int(value))


class Manifest(BaseModel):
    """A published, immutable version."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_version: Literal[1, 2] = Field(2, alias="schemaVersion")
    version: str
    created: dt.datetime
    files: tuple[ManifestFile, ...]

    @field_validator("version")
    @classmethod
    def _safe_version(cls, value: str) -> str:
        return check_version(value)

    @model_validator(mode="after")
    def _paths_fit_on_disk(self) -> Manifest:
        """No duplicates, and no file that is also another file's directory (linear: a set,
        then one sort, so a hostile 100,000-entry manifest is refused in well under a second)."""
        duplicate = first_duplicate(f.path for f in self.files)
        if duplicate is not None:
            raise ValueError(f"file {duplicate!r} is listed twice")
        nested = file_inside_a_file(f.path for f in self.files)
        if nested is not None:
            inner, outer = nested
            raise ValueError(f"{inner!r} is inside {outer!r}, which is a file")
        return self

    @model_validator(mode="after")
    def _pieces_only_in_schema_2(self) -> Manifest:
        """Schema 1 (before pieces) has none: a document claiming both is not one we wrote."""
        if self.schema_version == 1:
            with_pieces = next((f.path for f in self.files if f.pieces is not None), None)
            if with_pieces is not None:
                raise ValueError(f"{with_pieces!r} has pieces, which schema 1 does not know")
        return self

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @cached_property
    def _by_path(self) -> dict[str, ManifestFile]:
        return {entry.path: entry for entry in self.files}

    def file(self, path: str) -> ManifestFile:
        """The entry of `path` (KeyError if none), by a dict built once: callers look up many."""
        return self._by_path[path]

    def to_json(self) -> bytes:
        """The document as publish writes it; a file without pieces has no `pieces` key."""
        return self.model_dump_json(by_alias=True, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse a manifest from any reader (L3, a peer, the store); over its cap it is refused
        before parsing, as a ValidationError like any other invalid manifest."""
        return cls.model_validate_json(check_size(data, MANIFEST_MAX_BYTES, cls.__name__))


class IndexEntry(BaseModel):
    """One version in `<prefix>/index.json`. A publish lists its version as `publishing`
    before it writes the manifest, so the index never lacks a version that exists; whether
    one is published is the manifest's to say (`sources.publish.settle`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    created: dt.datetime
    files: Annotated[int, Field(ge=0)]
    size: Annotated[int, Field(ge=0)]
    state: Literal["publishing", "published"] = "published"

    @field_validator("version")
    @classmethod
    def _safe_version(cls, value: str) -> str:
        return check_version(value)


class VersionIndex(BaseModel):
    """`<prefix>/index.json`: the versions, oldest first. Agents read manifests; this is for
    people and for `prune`, since list calls do not work against every OSS-compatible store."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: Literal[1] = Field(1, alias="schemaVersion")
    versions: list[IndexEntry] = Field(default_factory=list)

    def with_version(self, manifest: Manifest) -> VersionIndex:
        kept = [v for v in self.versions if v.version != manifest.version]
        entry = IndexEntry(
            version=manifest.version,
            created=manifest.created,
            files=len(manifest.files),
            size=manifest.total_size,
        )
        return VersionIndex(versions=sorted([*kept, entry], key=lambda v: v.created))

    def with_publishing(self, version: str, claimed: dt.datetime) -> VersionIndex:
        """`version` listed before its manifest exists: a publish that dies after writing
        the manifest still leaves it in the index."""
        entry = IndexEntry(version=version, created=claimed, files=0, size=0, state="publishing")
        kept = [v for v in self.versions if v.version != version]
        return VersionIndex(versions=sorted([*kept, entry], key=lambda v: v.created))

    def entry(self, version: str) -> IndexEntry | None:
        return next((v for v in self.versions if v.version == version), None)

    @property
    def published(self) -> list[IndexEntry]:
        return [v for v in self.versions if v.state == "published"]

    def without(self, versions: set[str]) -> VersionIndex:
        return VersionIndex(versions=[v for v in self.versions if v.version not in versions])

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> VersionIndex:
        """Parse `index.json`; over its cap it is refused before parsing (a ValidationError)."""
        return cls.model_validate_json(check_size(data, INDEX_MAX_BYTES, cls.__name__))


def check_size(data: bytes | str, cap: int, title: str) -> bytes:
    """`data` as bytes if it is within `cap`; else a ValidationError naming the size and the cap
    (never the content), so every caller's `except ValidationError` handles it as it is."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) <= cap:
        return raw
    problem = PydanticCustomError(
        "too_large",
        "document of {size} bytes is larger than its cap of {cap} bytes",
        {"size": f"{len(raw):,}", "cap": f"{cap:,}"},
    )
    raise ValidationError.from_exception_data(
        title, [{"type": problem, "loc": (), "input": f"<{len(raw)} bytes>"}]
    )


def first_duplicate(paths: Iterable[str]) -> str | None:
    """The first path (in order) seen before; O(n) with a set."""
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            return path
        seen.add(path)
    return None


def file_inside_a_file(paths: Iterable[str]) -> tuple[str, str] | None:
    """(inner, outer) where `outer` is a file and `inner` lies below it, or None. Paths are
    sorted with '/' as the lowest character: then whatever lies below a path `p` sorts
    right after `p`, so one comparison of neighbours finds any such pair (O(n log n) in C,
    and O(total length) in memory, whatever the depth of the paths)."""
    keys = sorted(path.replace("/", _SEPARATOR_KEY) for path in paths)
    for outer, inner in itertools.pairwise(keys):
        if inner.startswith(outer + _SEPARATOR_KEY):
            return inner.replace(_SEPARATOR_KEY, "/"), outer.replace(_SEPARATOR_KEY, "/")
    return None
