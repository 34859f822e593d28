"""gc: orphan blobs, holds, old partial downloads, never a linked blob."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from modelcache.store import Store
from tests.unit.store.support import MODEL, install, put_blob, sha


def test_gc_removes_orphans_and_keeps_linked_blobs(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"kept"})
    orphan = put_blob(store, b"orphan" * 100)
    # a fresh adoption is held (a pull may be about to install it) ...
    assert store.gc().blobs_removed == 0
    assert store.has_blob(orphan)
    # ... until the hold expires
    result = store.gc(hold_max_age=0)
    assert (result.blobs_removed, result.blob_bytes_freed, result.holds_expired) == (1, 600, 1)
    assert result.bytes_freed == 600
    assert not store.has_blob(orphan)
    assert store.has_blob(sha(b"kept"))
    assert store.gc(hold_max_age=0).bytes_freed == 0


def test_gc_keeps_what_a_version_links_even_without_holds(store: Store) -> None:
    install(store, MODEL, "v1", {"a.bin": b"a", "b.bin": b"b"})
    assert not any((store.root / "tmp/adopted").iterdir())  # install released the holds
    store.gc(hold_max_age=0, tmp_max_age=0)
    assert store.has_blob(sha(b"a"))
    assert store.has_blob(sha(b"b"))


def test_gc_removes_old_partial_downloads_only(store: Store) -> None:
    digest = sha(b"partial")
    part = store.tmp_path(digest)
    part.write_bytes(b"par")
    resume = part.with_name(part.name + ".resume.json")
    resume.write_text("{}")
    assert store.gc().tmp_removed == 0  # young: a resumed pull will want it
    old = time.time() - 3 * 24 * 3600
    os.utime(part, (old, old))
    os.utime(resume, (old, old))
    result = store.gc()
    assert result.tmp_removed == 2
    assert result.tmp_bytes_freed == 5
    assert not part.exists()


def test_gc_skips_a_partial_download_in_progress(store: Store) -> None:
    digest = sha(b"busy")
    part = store.tmp_path(digest)
    part.write_bytes(b"bu")
    lock = store.root / "locks" / "blobs" / f"{digest}.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert store.gc(tmp_max_age=0).tmp_removed == 0
        assert part.exists()
    finally:
        holder.kill()
        holder.wait()
    assert store.gc(tmp_max_age=0).tmp_removed == 1


_HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_gc_removes_lock_files_of_gone_blobs(store: Store, root: Path) -> None:
    digest = put_blob(store, b"x")
    store.gc(hold_max_age=0)
    assert not store.has_blob(digest)
    assert not (root / "locks" / "blobs" / f"{digest}.lock").exists()
    put_blob(store, b"x")  # the lock works again after
    assert store.has_blob(digest)
