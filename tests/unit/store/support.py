"""Helpers for store tests: make blobs the way a pull would (download to tmp_path, adopt)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from modelcache.api.manifest import Manifest, ManifestFile
from modelcache.fs import crc64_xz
from modelcache.store import ModelRef, Store

MODEL = ModelRef("default", "sdxl")
LORA = ModelRef("studio", "lora.v2")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(path: str, data: bytes) -> ManifestFile:
    return ManifestFile(path=path, size=len(data), sha256=sha(data), crc64=str(crc64_xz(data)))


def manifest(version: str, files: Mapping[str, bytes]) -> Manifest:
    return Manifest(
        version=version,
        created=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        files=tuple(entry(path, data) for path, data in files.items()),
    )


def put_blob(store: Store, data: bytes) -> str:
    """Download (write) to the store's tmp path and adopt, as the engine does."""
    digest = sha(data)
    with store.blob_lock(digest):
        if not store.has_blob(digest):
            tmp = store.tmp_path(digest)
            tmp.write_bytes(data)
            store.adopt_blob(tmp, digest)
    return digest


def install(store: Store, model: ModelRef, version: str, files: Mapping[str, bytes]) -> Manifest:
    """Fetch every blob, then install the version."""
    for data in files.values():
        put_blob(store, data)
    built = manifest(version, files)
    store.install_version(model, built)
    return built


def tree(root: Path) -> dict[str, str]:
    """Every path under root -> 'dir', 'link:<target>' or 'file', for before/after comparisons."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = "file"
    return found


def version_files(store: Store, model: ModelRef, version: str) -> set[str]:
    base = store.version_path(model, version)
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}
