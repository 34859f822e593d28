"""Crash-safe file primitives: fsync files before a rename makes them visible, and the
directory after, so a power cut leaves either the old or the new state, never a mix."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from modelcache.store.layout import DELETING_PREFIX, LINK_TMP_SUFFIX, token


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """mkdir -p that also syncs each parent whose entry it created."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        fsync_dir(directory.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file whole or not at all (tmp + fsync + rename + dir fsync)."""
    tmp = path.with_name(f".{path.name}{LINK_TMP_SUFFIX}-{token()}")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def symlink_atomic(link: Path, target: str) -> None:
    """Point `link` at `target` in one step: a new link under `<link>.tmp`, then rename over."""
    tmp = link.with_name(link.name + LINK_TMP_SUFFIX)
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def link_atomic(source: Path, dest: Path) -> None:
    """Make `dest` a hard link to `source`, replacing whatever was there in one rename."""
    tmp = dest.with_name(f".{dest.name}.link-{token()}")
    os.link(source, tmp)
    try:
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_tree(path: Path) -> None:
    """Rename a directory out of sight first, so nobody sees it half-deleted, then delete it."""
    if not path.exists():
        return
    hidden = path.with_name(f"{DELETING_PREFIX}{path.name}-{token()}")
    os.rename(path, hidden)
    fsync_dir(path.parent)
    shutil.rmtree(hidden, ignore_errors=True)
