"""Many files sharing one blob, past the hard-link limit (lowered here to a few links; the real
65,000 of ext4 is in tests/integration/store/test_link_limit.py): files go to verified copies
of the blob, which gc collects and verify and quarantine cover like the blob itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache.store import ModelRef, Store, StoreError
from tests.unit.store.invariants import check_store
from tests.unit.store.support import MODEL, install, put_blob, sha

DATA = b"shared by many files"
DIGEST = sha(DATA)


def many(count: int, data: bytes = DATA, prefix: str = "f") -> dict[str, bytes]:
    return {f"{prefix}/{i:03d}.bin": data for i in range(count)}


def copy_path(store: Store, number: int) -> Path:
    return store.blob_path(DIGEST).with_name(f"{DIGEST}.{number}")


def blob_files(store: Store) -> list[Path]:
    return sorted((store.root / "blobs" / "sha256").glob("*/*"))


def test_files_past_the_link_limit_are_linked_to_verified_copies(root: Path) -> None:
    store = Store(root, link_limit=3)
    install(store, MODEL, "v1", many(10))
    store.flip(MODEL, "v1")

    blob = store.blob_path(DIGEST)
    copies = len(blob_files(store)) - 1
    assert copies >= 4  # 10 files, at most 2 per inode (3 links with the blob's own name)
    assert [p.name for p in blob_files(store)] == sorted(
        [DIGEST, *(f"{DIGEST}.{n}" for n in range(1, copies + 1))]
    )
    for path in blob_files(store):
        assert os.stat(path).st_nlink <= 3
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o444)
        assert path.read_bytes() == DATA
    assert sum(os.stat(p).st_nlink - 1 for p in blob_files(store)) == 10
    current = store.current_path(MODEL)
    assert all((current / name).read_bytes() == DATA for name in many(10))
    assert blob.is_file()
    assert store.verify_blob(DIGEST)
    check_store(store)


def test_gc_collects_a_copy_nobody_links_and_keeps_the_rest(root: Path) -> None:
    store = Store(root, link_limit=2)  # one file per inode
    install(store, MODEL, "v1", many(1))  # the blob is held while v1 installs: copy 1
    install(store, MODEL, "v2", many(1, prefix="g"))  # the blob itself
    store.flip(MODEL, "v1")
    assert [p.name for p in blob_files(store)] == [DIGEST, f"{DIGEST}.1"]

    store.remove_version(MODEL, "v2")  # the blob is unlinked, its copy is not
    assert store.gc().blobs_removed == 0  # the blob stays while a copy of it is linked
    assert (store.current_path(MODEL) / "f/000.bin").read_bytes() == DATA
    check_store(store, after_gc=True)

    install(store, MODEL, "v3", many(2, prefix="h"))  # the blob, then a new copy 2
    assert [p.name for p in blob_files(store)] == [DIGEST, f"{DIGEST}.1", f"{DIGEST}.2"]
    store.remove_version(MODEL, "v3")
    assert store.gc().blobs_removed == 1  # copy 2
    assert [p.name for p in blob_files(store)] == [DIGEST, f"{DIGEST}.1"]
    check_store(store, after_gc=True)

    store.remove_model(MODEL)
    assert store.gc().blobs_removed == 2
    assert blob_files(store) == []


def test_verify_and_quarantine_cover_the_copies(root: Path) -> None:
    store = Store(root, link_limit=2)
    install(store, MODEL, "v1", many(3))  # blob + 1 file, copy 1 + 1 file, copy 2 + 1 file
    copy = copy_path(store, 2)
    os.chmod(copy, 0o644)
    copy.write_bytes(DATA.upper())  # bit rot in a copy only; the blob itself is fine
    assert not store.verify_blob(DIGEST)

    held = len(blob_files(store))
    store.quarantine_blob(DIGEST)
    assert blob_files(store) == []
    assert len(list((root / "tmp" / "quarantine").iterdir())) == held
    put_blob(store, DATA)  # fetched again, as a repair does
    assert store.relink(DIGEST) == 3
    assert store.verify_blob(DIGEST)
    check_store(store)
    store.gc()
    assert list((root / "tmp" / "quarantine").iterdir()) == []


def test_a_corrupt_blob_is_not_copied(root: Path) -> None:
    store = Store(root, link_limit=2)
    install(store, MODEL, "v1", many(1))
    before = blob_files(store)
    blob = store.blob_path(DIGEST)
    os.chmod(blob, 0o644)
    blob.write_bytes(DATA.upper())
    with pytest.raises(StoreError, match="does not match its digest"):
        install(store, MODEL, "v2", many(3))
    assert not store.has_version(MODEL, "v2")
    assert blob_files(store) == before
    assert [p.name for p in (root / "tmp").iterdir() if p.is_file()] == []


def test_a_half_written_copy_is_removed_by_recovery_unless_one_is_being_written(
    root: Path,
) -> None:
    store = Store(root)
    install(store, MODEL, "v1", many(1))
    leftover = root / "tmp" / f"{DIGEST}.copy"  # what a crash in the middle of a copy leaves
    leftover.write_bytes(DATA[:5])
    unlinked = copy_path(store, 1)  # a crash after the rename, before the first link
    unlinked.write_bytes(DATA)

    holder = _hold_elsewhere(root / "locks" / "blobs" / f"{DIGEST}.lock")
    try:
        Store(root)  # a copy in progress elsewhere is left alone
        assert leftover.exists()
    finally:
        holder.kill()
        holder.wait()
    Store(root)
    assert not leftover.exists()
    store.gc()
    assert not unlinked.exists()
    check_store(store, after_gc=True)


def _hold_elsewhere(lock: Path) -> subprocess.Popen[str]:
    """Another process holding a lock, as a running agent would."""
    code = (
        "import sys, time\nfrom filelock import FileLock\n"
        "lock = FileLock(sys.argv[1])\nlock.acquire()\nprint('held', flush=True)\ntime.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_the_link_limit_is_validated(root: Path) -> None:
    with pytest.raises(ValueError, match="link_limit"):
        Store(root, link_limit=1)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.integers(2, 5),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    removed=st.sets(st.integers(0, 3)),
)
def test_any_number_of_files_share_a_blob_and_gc_leaves_exactly_what_is_linked(
    tmp_path_factory: pytest.TempPathFactory, limit: int, sizes: list[int], removed: set[int]
) -> None:
    store = Store(tmp_path_factory.mktemp("links") / "cache", link_limit=limit)
    model = ModelRef("default", "shared")
    for number, count in enumerate(sizes):
        install(store, model, f"v{number}", many(count, prefix=f"v{number}"))
    for number in removed & set(range(len(sizes))):
        store.remove_version(model, f"v{number}")
    store.gc()
    check_store(store, after_gc=True)
    for path in blob_files(store):
        assert os.stat(path).st_nlink <= limit
    kept = sum(count for n, count in enumerate(sizes) if n not in removed)
    linked = sum(os.stat(p).st_nlink - 1 for p in blob_files(store))
    assert linked == kept
    store.remove_model(model)
    store.gc()
    assert blob_files(store) == []
