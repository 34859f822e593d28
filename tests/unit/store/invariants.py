"""The store's invariants, checked from the disk alone (used by property and process tests)."""

from __future__ import annotations

import os

from modelcache.fs import hash_file
from modelcache.store import Store


def check_store(store: Store, *, after_gc: bool = False) -> None:
    referenced: set[str] = set()
    for model in store.models():
        installed = {v.version: v for v in store.versions(model)}
        for pointer in (store.current(model), store.previous(model)):
            assert pointer is None or pointer in installed, f"{model}: {pointer} not installed"
        for link in ("current", "previous"):
            path = store.current_path(model).parent / link
            if path.is_symlink():  # never dangling
                assert (path / "manifest.json").is_file(), f"{path} dangles"
        for version in installed.values():
            for entry in version.manifest.files:
                path = version.path / entry.path
                assert hash_file(path).sha256 == entry.sha256, f"{path} has the wrong content"
                blob = store.blob_path(entry.sha256)
                assert blob.is_file(), f"{blob} is missing but {path} references it"
                assert os.stat(path).st_ino in blob_inodes(store, entry.sha256), (
                    f"{path} is neither the blob nor a copy of it"
                )
                referenced.add(entry.sha256)
    on_disk = {p.name for p in (store.root / "blobs" / "sha256").glob("*/*")}
    assert referenced <= on_disk
    if after_gc:
        digests = {name.partition(".")[0] for name in on_disk}
        assert digests == referenced, f"orphans after gc: {sorted(digests - referenced)}"
        for copy in (store.root / "blobs" / "sha256").glob("*/*.*"):
            assert os.stat(copy).st_nlink > 1, f"{copy} is linked by nothing after gc"


def blob_inodes(store: Store, sha256: str) -> set[int]:
    """The inodes of a blob and of its copies (`<digest>.<n>`, made at the link limit)."""
    blob = store.blob_path(sha256)
    return {os.stat(p).st_ino for p in blob.parent.glob(f"{sha256}*")}
