"""Garbage collection: orphan blobs, expired holds, old partial downloads, crash leftovers.

A blob is an orphan when its link count is 1: every version file is a hard link to
it, and a fresh adoption holds a second link until a version is installed. A copy of
a blob (`<digest>.<n>`, made at the hard-link limit, see `links`) goes the same way
once nothing links it; the blob itself stays while any copy of it is linked, since
it is the name by which the store knows it holds that digest. gc runs
under the gc lock, which `install_version` also takes while it links, so a blob
cannot vanish between "it is there" and "a version links it". Whatever another
process holds a lock on (a download in progress) is skipped, never waited for.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from modelcache.store import locks
from modelcache.store.blobs import BlobInfo, iter_blobs, same_inode
from modelcache.store.layout import COPY_SUFFIX, PART_SUFFIX, RESUME_SUFFIX, Layout, is_sha256


@dataclass(frozen=True)
class GcResult:
    """What one gc pass removed."""

    blobs_removed: int = 0
    blob_bytes_freed: int = 0
    tmp_removed: int = 0
    tmp_bytes_freed: int = 0
    quarantine_removed: int = 0
    quarantine_bytes_freed: int = 0
    holds_expired: int = 0
    leftovers_removed: int = 0

    @property
    def bytes_freed(self) -> int:
        return self.blob_bytes_freed + self.tmp_bytes_freed + self.quarantine_bytes_freed


def _digest_of_tmp(name: str) -> str | None:
    """`<digest>.part` and `<digest>.part.resume.json` belong to a blob download,
    `<digest>.copy` to a blob copy being written."""
    stem = name.removesuffix(RESUME_SUFFIX).removesuffix(PART_SUFFIX).removesuffix(COPY_SUFFIX)
    return stem if is_sha256(stem) else None


def expire_holds(layout: Layout, max_age: float, now: float) -> int:
    """Drop holds of adoptions never installed (a failed pull), or of blobs gone since."""
    expired = 0
    for entry in list(os.scandir(layout.holds_dir)):
        if not is_sha256(entry.name):
            continue
        path = Path(entry.path)
        stale = not same_inode(path, layout.blob_path(entry.name))
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime >= max_age
        except FileNotFoundError:
            continue
        if not (stale or old):
            continue
        with locks.try_hold(layout.blob_lock(entry.name)) as got:
            if got:
                path.unlink(missing_ok=True)
                expired += 1
    return expired


def sweep_quarantine(layout: Layout) -> tuple[int, int]:
    """Corrupt copies that no version links any more (repaired and relinked, or removed)."""
    count = freed = 0
    for entry in list(os.scandir(layout.quarantine_dir)):
        stat = entry.stat(follow_symlinks=False)
        if stat.st_nlink == 1:
            Path(entry.path).unlink(missing_ok=True)
            count, freed = count + 1, freed + stat.st_size
    return count, freed


def sweep_blobs(layout: Layout) -> tuple[int, int]:
    count = freed = 0
    for sha256, group in itertools.groupby(iter_blobs(layout), key=lambda blob: blob.sha256):
        files = list(group)
        if all(blob.links != 1 for blob in files):
            continue
        with locks.try_hold(layout.blob_lock(sha256)) as got:
            if not got:
                continue
            removed, size = _sweep_digest(files)
            count, freed = count + removed, freed + size
    return count, freed


def _sweep_digest(files: list[BlobInfo]) -> tuple[int, int]:
    """Unlinked copies of one digest, then the blob itself if it is unlinked and no copy
    is left (caller holds the blob lock, so nobody links meanwhile)."""
    count = freed = 0
    copies_left = 0
    blob: BlobInfo | None = None
    for info in files:
        if info.copy == 0:
            blob = info
            continue
        if _unlink_if_orphan(info.path):
            count, freed = count + 1, freed + info.size
        elif info.path.exists():
            copies_left += 1
    if blob is not None and not copies_left and _unlink_if_orphan(blob.path):
        count, freed = count + 1, freed + blob.size
    return count, freed


def _unlink_if_orphan(path: Path) -> bool:
    try:
        if os.lstat(path).st_nlink != 1:
            return False
    except FileNotFoundError:
        return False
    path.unlink()
    return True


def sweep_tmp(layout: Layout, max_age: float, now: float) -> tuple[int, int]:
    """Old partial downloads (and stray files) at the top of tmp/; subdirectories are ours."""
    count = freed = 0
    for entry in list(os.scandir(layout.tmp_dir)):
        if not entry.is_file(follow_symlinks=False):
            continue
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if now - stat.st_mtime < max_age:
            continue
        digest = _digest_of_tmp(entry.name)
        if digest is None:
            Path(entry.path).unlink(missing_ok=True)
            count, freed = count + 1, freed + stat.st_size
            continue
        with locks.try_hold(layout.blob_lock(digest)) as got:
            if got:
                Path(entry.path).unlink(missing_ok=True)
                count, freed = count + 1, freed + stat.st_size
    return count, freed


def sweep_blob_locks(layout: Layout) -> None:
    """Lock files of blobs that are gone and not being downloaded. Unlinked while held:
    filelock notices a waiter's unlinked inode (st_nlink 0) and retries on a new file."""
    for entry in list(os.scandir(layout.blob_locks_dir)):
        digest = entry.name.removesuffix(".lock")
        if not is_sha256(digest) or layout.blob_path(digest).exists():
            continue
        if layout.tmp_path(digest).exists():
            continue
        with locks.try_hold(Path(entry.path)) as got:
            if got and not layout.blob_path(digest).exists():
                Path(entry.path).unlink(missing_ok=True)


def collect(layout: Layout, *, tmp_max_age: float, hold_max_age: float) -> GcResult:
    """One pass, in the order that frees the most: holds first, so their blobs go too."""
    now = time.time()
    holds = expire_holds(layout, hold_max_age, now)
    quarantined, quarantine_bytes = sweep_quarantine(layout)
    blobs, blob_bytes = sweep_blobs(layout)
    tmps, tmp_bytes = sweep_tmp(layout, tmp_max_age, now)
    sweep_blob_locks(layout)
    return GcResult(
        blobs_removed=blobs,
        blob_bytes_freed=blob_bytes,
        tmp_removed=tmps,
        tmp_bytes_freed=tmp_bytes,
        quarantine_removed=quarantined,
        quarantine_bytes_freed=quarantine_bytes,
        holds_expired=holds,
    )
