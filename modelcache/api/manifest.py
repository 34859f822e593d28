"""The L3 manifest: what a published version holds, with a size, sha256 and CRC-64/XZ per file.

Written last by `modelcache publish`, so a version without a manifest does not
exist yet; read by every agent, so every field is checked on the way in.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelcache.api.names import check_relative_path, check_version

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.json"
SHA256_HEX = r"^[0-9a-f]{64}$"
CRC64_MAX = 2**64 - 1


class ManifestFile(BaseModel):
    """One file of a version. `crc64` is CRC-64/XZ, as OSS's x-oss-hash-crc64ecma (decimal)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=SHA256_HEX)]
    crc64: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]

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

    schema_version: Literal[1] = Field(1, alias="schemaVersion")
    version: str
    created: dt.datetime
    files: tuple[ManifestFile, ...]

    @field_validator("version")
    @classmethod
    def _safe_version(cls, value: str) -> str:
        return check_version(value)

    @model_validator(mode="after")
    def _paths_fit_on_disk(self) -> Manifest:
        """No duplicates, and no file that is also another file's directory."""
        paths = {entry.path for entry in self.files}
        if len(paths) != len(self.files):
            duplicate = next(p for p in paths if sum(f.path == p for f in self.files) > 1)
            raise ValueError(f"file {duplicate!r} is listed twice")
        for entry in self.files:
            parts = entry.path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent in paths:
                    raise ValueError(f"{entry.path!r} is inside {parent!r}, which is a file")
        return self

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, path: str) -> ManifestFile:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        return cls.model_validate_json(data)


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
        return cls.model_validate_json(data)
