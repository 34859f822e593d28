"""Where everything lives under ROOT: the one place that turns digests and names into paths.

```
blobs/sha256/<2 hex>/<digest>               read-only blobs
blobs/sha256/<2 hex>/<digest>.<n>           verified copies of a blob at the hard-link limit
models/<ns>/<name>/versions/<version>/...   hard links into blobs/ plus manifest.json
models/<ns>/<name>/{current,previous}       relative symlinks to versions/<v>
models/<ns>/<name>/pins.json                pinned versions
models/<ns>/<name>/source.json              the model's L3 URL (for `use`, repairs)
tmp/<digest>.part (+ .resume.json)          partial downloads
tmp/<digest>.copy                           a blob copy being written (renamed when complete)
tmp/adopted/<digest>                        a second link that keeps a fresh blob until installed
tmp/quarantine/<digest>-<ns>                corrupt blobs moved out of blobs/
locks/                                      filelock files
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from modelcache.api.manifest import MANIFEST_NAME
from modelcache.api.names import InvalidName, ModelRef, check_version
from modelcache.fs import token
from modelcache.store.errors import StoreError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BLOB_NAME = re.compile(r"^([0-9a-f]{64})(?:\.([1-9][0-9]{0,8}))?$")
STAGING_PREFIX = ".staging-"
CURRENT = "current"
PREVIOUS = "previous"
PINS = "pins.json"
SOURCE = "source.json"  # where the model comes from: {"url": ...}
VERSIONS = "versions"
PART_SUFFIX = ".part"
RESUME_SUFFIX = ".resume.json"
COPY_SUFFIX = ".copy"


def check_sha256(sha256: str) -> str:
    """A digest becomes a path: only 64 lowercase hex characters get that far."""
    if not _SHA256.fullmatch(sha256):
        raise StoreError(f"invalid sha256 {sha256!r}: expected 64 lowercase hex characters")
    return sha256


def is_sha256(name: str) -> bool:
    return _SHA256.fullmatch(name) is not None


def parse_blob_name(name: str) -> tuple[str, int] | None:
    """`<digest>` -> (digest, 0), `<digest>.<n>` -> (digest, n); None for anything else."""
    match = _BLOB_NAME.fullmatch(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2) or 0)


def is_version_name(name: str) -> bool:
    """Entries under versions/ that are versions; staging and deleting dirs start with a dot."""
    try:
        check_version(name)
    except InvalidName:
        return False
    return True


@dataclass(frozen=True)
class Layout:
    """Path arithmetic for one ROOT; no I/O."""

    root: Path

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def holds_dir(self) -> Path:
        return self.tmp_dir / "adopted"

    @property
    def quarantine_dir(self) -> Path:
        return self.tmp_dir / "quarantine"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def blob_locks_dir(self) -> Path:
        return self.locks_dir / "blobs"

    @property
    def gc_lock(self) -> Path:
        return self.locks_dir / "gc.lock"

    def blob_path(self, sha256: str, copy: int = 0) -> Path:
        """The blob itself (`copy` 0), or its n-th copy (see `links`)."""
        check_sha256(sha256)
        name = f"{sha256}.{copy}" if copy else sha256
        return self.blobs_dir / sha256[:2] / name

    def tmp_path(self, sha256: str) -> Path:
        return self.tmp_dir / f"{check_sha256(sha256)}{PART_SUFFIX}"

    def copy_tmp_path(self, sha256: str) -> Path:
        return self.tmp_dir / f"{check_sha256(sha256)}{COPY_SUFFIX}"

    def hold_path(self, sha256: str) -> Path:
        return self.holds_dir / check_sha256(sha256)

    def blob_lock(self, sha256: str) -> Path:
        return self.blob_locks_dir / f"{check_sha256(sha256)}.lock"

    def model_lock(self, model: ModelRef) -> Path:
        return self.locks_dir / "models" / model.namespace / f"{model.name}.lock"

    def model_dir(self, model: ModelRef) -> Path:
        return self.models_dir / model.namespace / model.name

    def versions_dir(self, model: ModelRef) -> Path:
        return self.model_dir(model) / VERSIONS

    def version_dir(self, model: ModelRef, version: str) -> Path:
        return self.versions_dir(model) / check_version(version)

    def manifest_path(self, model: ModelRef, version: str) -> Path:
        return self.version_dir(model, version) / MANIFEST_NAME

    def current_link(self, model: ModelRef) -> Path:
        return self.model_dir(model) / CURRENT

    def previous_link(self, model: ModelRef) -> Path:
        return self.model_dir(model) / PREVIOUS

    def pins_file(self, model: ModelRef) -> Path:
        return self.model_dir(model) / PINS

    def source_file(self, model: ModelRef) -> Path:
        return self.model_dir(model) / SOURCE

    def staging_dir(self, model: ModelRef, version: str) -> Path:
        return self.versions_dir(model) / f"{STAGING_PREFIX}{check_version(version)}-{token()}"

    def make_dirs(self) -> None:
        for directory in (
            self.blobs_dir,
            self.models_dir,
            self.holds_dir,
            self.quarantine_dir,
            self.blob_locks_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
