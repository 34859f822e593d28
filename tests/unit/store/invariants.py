"""The store's invariants, checked from the disk alone (used by property and process tests)."""

from __future__ import annotations

import os

from modelcache.sources.checksum import hash_file
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
                assert os.stat(path).st_ino == os.stat(blob).st_ino, f"{path} is not the blob"
                referenced.add(entry.sha256)
    on_disk = {p.name for p in (store.root / "blobs" / "sha256").glob("*/*")}
    assert referenced <= on_disk
    if after_gc:
        assert on_disk == referenced, f"orphans after gc: {sorted(on_disk - referenced)}"
