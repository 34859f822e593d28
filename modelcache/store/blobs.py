"""Content-addressed blobs: adopt a verified download, check, quarantine, enumerate.

A blob's link count tells who uses it: 1 is the blob alone (an orphan), each version
file adds a hard link, and a fresh adoption adds a *hold* (tmp/adopted/<digest>) so
that gc cannot take it in the gap between `adopt_blob` and `install_version`.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelcache.sources.checksum import hash_file
from modelcache.store.durable import fsync_dir, fsync_file, link_atomic, make_dirs
from modelcache.store.layout import RESUME_SUFFIX, Layout, is_sha256, token

READ_ONLY = 0o444


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    path: Path
    size: int
    links: int
    mtime: float


def has_blob(layout: Layout, sha256: str) -> bool:
    return layout.blob_path(sha256).is_file()


def adopt(layout: Layout, tmp: Path, sha256: str) -> Path:
    """Move a verified file into blobs/ (durably, read-only); an existing blob wins."""
    dest = layout.blob_path(sha256)
    resume = tmp.with_name(tmp.name + RESUME_SUFFIX)
    if dest.is_file():
        tmp.unlink(missing_ok=True)
        resume.unlink(missing_ok=True)
        return dest
    source = _same_filesystem(layout, tmp)
    fsync_file(source)
    os.chmod(source, READ_ONLY)
    now = time.time()
    os.utime(source, (now, now))  # mtime = when the blob entered the store: a hold's age
    make_dirs(dest.parent)
    link_atomic(source, layout.hold_path(sha256))
    os.rename(source, dest)
    fsync_dir(dest.parent)
    fsync_dir(layout.holds_dir)
    fsync_dir(source.parent)
    if source != tmp:
        tmp.unlink(missing_ok=True)
    resume.unlink(missing_ok=True)
    return dest


def _same_filesystem(layout: Layout, tmp: Path) -> Path:
    """rename() needs one filesystem; copy a foreign file into tmp/ first."""
    if os.stat(tmp).st_dev == os.stat(layout.tmp_dir).st_dev:
        return tmp
    copy = layout.tmp_dir / f".{tmp.name}.adopt-{token()}"
    shutil.copyfile(tmp, copy)
    return copy


def release_hold(layout: Layout, sha256: str) -> None:
    """A version links the blob now; the hold has done its job."""
    layout.hold_path(sha256).unlink(missing_ok=True)


def verify(layout: Layout, sha256: str) -> bool:
    """Rehash the blob; a missing blob is not a good one."""
    try:
        return hash_file(layout.blob_path(sha256)).sha256 == sha256
    except FileNotFoundError:
        return False


def quarantine(layout: Layout, sha256: str) -> Path | None:
    """Move a corrupt blob out of blobs/ so it is fetched again; versions keep their link."""
    source = layout.blob_path(sha256)
    dest = layout.quarantine_dir / f"{sha256}-{time.time_ns()}"
    try:
        os.rename(source, dest)
    except FileNotFoundError:
        return None
    fsync_dir(source.parent)
    fsync_dir(dest.parent)
    release_hold(layout, sha256)
    return dest


def iter_blobs(layout: Layout) -> Iterator[BlobInfo]:
    """Every blob on disk (ignores anything in blobs/ that is not named by its digest)."""
    try:
        prefixes = sorted(os.scandir(layout.blobs_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for prefix in prefixes:
        if not prefix.is_dir(follow_symlinks=False):
            continue
        for entry in sorted(os.scandir(prefix.path), key=lambda e: e.name):
            if not is_sha256(entry.name) or entry.name[:2] != prefix.name:
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            yield BlobInfo(entry.name, Path(entry.path), stat.st_size, stat.st_nlink, stat.st_mtime)


def same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
