"""Content-addressed blobs: adopt a verified download, check, quarantine, enumerate.

A blob's link count tells who uses it: 1 is the blob alone (an orphan), each version
file adds a hard link, and a fresh adoption adds a *hold* (tmp/adopted/<digest>) so
that gc cannot take it in the gap between `adopt_blob` and `install_version`. A blob
at the filesystem's hard-link limit gets verified copies, `<digest>.<n>` beside it
(see `links`); each copy is counted, verified and quarantined like the blob itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelcache.fs import fsync_dir, fsync_file, hash_file, link_atomic, make_dirs, token
from modelcache.store.errors import StoreError
from modelcache.store.layout import RESUME_SUFFIX, Layout, parse_blob_name

READ_ONLY = 0o444
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    path: Path
    size: int
    links: int
    mtime: float
    copy: int = 0  # 0: the blob itself; n: its n-th copy


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
    """Rehash the blob and each of its copies; a missing blob is not a good one."""
    try:
        return all(hash_file(path).sha256 == sha256 for path in blob_files(layout, sha256))
    except FileNotFoundError:
        return False


def blob_files(layout: Layout, sha256: str) -> list[Path]:
    """The blob and its copies, the blob first (whether or not it is there)."""
    return [layout.blob_path(sha256), *copy_paths(layout, sha256)]


def copy_paths(layout: Layout, sha256: str) -> list[Path]:
    """The copies of a blob on disk, by number (gc may have left gaps)."""
    found: list[tuple[int, Path]] = []
    try:
        entries = list(os.scandir(layout.blob_path(sha256).parent))
    except FileNotFoundError:
        return []
    for entry in entries:
        parsed = parse_blob_name(entry.name)
        if parsed is not None and parsed[0] == sha256 and parsed[1] > 0:
            found.append((parsed[1], Path(entry.path)))
    return [path for _, path in sorted(found)]


def inodes(layout: Layout, sha256: str) -> set[tuple[int, int]]:
    """(device, inode) of the blob and its copies: a file linked to any of them is good."""
    found: set[tuple[int, int]] = set()
    for path in blob_files(layout, sha256):
        try:
            stat = os.lstat(path)
        except FileNotFoundError:
            continue
        found.add((stat.st_dev, stat.st_ino))
    return found


def quarantine(layout: Layout, sha256: str) -> Path | None:
    """Move a corrupt blob (and its copies) out of blobs/ so it is fetched again; versions
    keep their links. Returns where the blob itself went."""
    moved: Path | None = None
    stamp = time.time_ns()
    for path in blob_files(layout, sha256):
        dest = layout.quarantine_dir / f"{path.name}-{stamp}"
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            continue
        moved = moved or dest
    if moved is None:
        return None
    fsync_dir(layout.blob_path(sha256).parent)
    fsync_dir(layout.quarantine_dir)
    release_hold(layout, sha256)
    return moved


def make_copy(layout: Layout, sha256: str, dest: Path) -> None:
    """A second copy of a blob at `dest`, with its own inode (and so its own link count).
    Written under tmp/, hashed as it is written, synced, then renamed into blobs/: blobs/
    never holds half a copy, and a crash leaves only tmp/<digest>.copy, which recovery and
    gc remove. The caller holds the blob's lock."""
    source, tmp = layout.blob_path(sha256), layout.copy_tmp_path(sha256)
    digest = hashlib.sha256()
    try:
        with source.open("rb") as reader, tmp.open("wb") as writer:
            while chunk := reader.read(COPY_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        if digest.hexdigest() != sha256:
            raise StoreError(
                f"cannot copy blob {sha256}: {source} does not match its digest (run "
                "`modelcache verify` to repair it)"
            )
        os.chmod(tmp, READ_ONLY)
        os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    fsync_dir(tmp.parent)


def iter_blobs(layout: Layout) -> Iterator[BlobInfo]:
    """Every blob and blob copy on disk, by name (a blob just before its copies); ignores
    anything in blobs/ that is not named by its digest."""
    try:
        prefixes = sorted(os.scandir(layout.blobs_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for prefix in prefixes:
        if not prefix.is_dir(follow_symlinks=False):
            continue
        for entry in sorted(os.scandir(prefix.path), key=lambda e: e.name):
            parsed = parse_blob_name(entry.name)
            if parsed is None or entry.name[:2] != prefix.name:
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            sha256, copy = parsed
            yield BlobInfo(
                sha256, Path(entry.path), stat.st_size, stat.st_nlink, stat.st_mtime, copy
            )


def same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
