"""Blobs: adoption, the content-addressed layout, verification, quarantine and repair."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from modelcache.store import ModelRef, Store, StoreError
from tests.unit.store.support import MODEL, install, put_blob, sha


def test_blob_path_is_content_addressed(store: Store) -> None:
    digest = sha(b"x")
    assert store.blob_path(digest) == store.root / "blobs" / "sha256" / digest[:2] / digest


def test_tmp_path_is_stable_per_digest(store: Store, root: Path) -> None:
    digest = sha(b"x")
    assert store.tmp_path(digest) == store.tmp_path(digest)
    assert Store(root).tmp_path(digest) == store.tmp_path(digest)
    assert store.tmp_path(digest).parent == store.root / "tmp"


@pytest.mark.parametrize("bad", ["", "ABC", "0" * 63, "g" * 64, "../" + "0" * 61])
def test_invalid_digests_never_become_paths(store: Store, bad: str) -> None:
    with pytest.raises(StoreError, match="invalid sha256"):
        store.blob_path(bad)


def test_adopt_makes_a_read_only_blob_and_removes_the_download(store: Store) -> None:
    digest = sha(b"weights")
    tmp = store.tmp_path(digest)
    tmp.write_bytes(b"weights")
    resume = tmp.with_name(tmp.name + ".resume.json")
    resume.write_text("{}")

    path = store.adopt_blob(tmp, digest)

    assert path == store.blob_path(digest)
    assert path.read_bytes() == b"weights"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert not tmp.exists()
    assert not resume.exists()
    assert store.has_blob(digest)


def test_adopting_an_existing_blob_keeps_it_and_drops_the_copy(store: Store) -> None:
    digest = put_blob(store, b"once")
    inode = store.blob_path(digest).stat().st_ino
    tmp = store.tmp_path(digest)
    tmp.write_bytes(b"once")
    assert store.adopt_blob(tmp, digest) == store.blob_path(digest)
    assert store.blob_path(digest).stat().st_ino == inode
    assert not tmp.exists()


def test_adopt_copies_a_file_from_another_filesystem(store: Store, tmp_path: Path) -> None:
    # Same filesystem here, so exercise the path by adopting from outside tmp/.
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"far")
    digest = sha(b"far")
    assert store.adopt_blob(outside, digest).read_bytes() == b"far"
    assert not outside.exists()


def test_verify_blob_rehashes(store: Store) -> None:
    digest = put_blob(store, b"good")
    assert store.verify_blob(digest)
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"evil")
    assert not store.verify_blob(digest)
    assert not store.verify_blob(sha(b"never stored"))


def test_quarantine_then_repair_relinks_every_version_file(store: Store) -> None:
    """The documented repair: quarantine, download again, adopt, relink."""
    other = ModelRef("team", "other")
    install(store, MODEL, "v1", {"w.bin": b"payload", "copy.bin": b"payload"})
    install(store, other, "v9", {"x.bin": b"payload"})
    digest = sha(b"payload")
    blob = store.blob_path(digest)
    os.chmod(blob, 0o644)
    with blob.open("r+b") as handle:  # bit rot in place: every hard link sees it
        handle.write(b"PAY")
    assert not store.verify_blob(digest)

    store.quarantine_blob(digest)
    assert not store.has_blob(digest)
    # versions still have their (corrupt) file: nothing vanished under a running model
    assert (store.version_path(MODEL, "v1") / "w.bin").exists()

    put_blob(store, b"payload")
    assert store.relink(digest) == 3
    assert store.relink(digest) == 0  # already pointing at the good blob
    for model, version, name in [
        (MODEL, "v1", "w.bin"),
        (MODEL, "v1", "copy.bin"),
        (other, "v9", "x.bin"),
    ]:
        path = store.version_path(model, version) / name
        assert path.read_bytes() == b"payload"
        assert path.stat().st_ino == store.blob_path(digest).stat().st_ino

    result = store.gc()
    assert result.quarantine_removed == 1  # the corrupt copy is linked by nobody now
    assert not any((store.root / "tmp" / "quarantine").iterdir())


def test_quarantine_of_a_missing_blob_is_a_no_op(store: Store) -> None:
    store.quarantine_blob(sha(b"absent"))


def test_relink_needs_the_blob(store: Store) -> None:
    with pytest.raises(StoreError, match="missing"):
        store.relink(sha(b"absent"))
