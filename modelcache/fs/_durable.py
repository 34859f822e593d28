"""Crash-safe file primitives: fsync files before a rename makes them visible, and the
directory after, so a power cut leaves either the old or the new state, never a mix.

Temporary names are fixed here because recovery code recognises them after a crash:
`.<name>.tmp-<token>` for a file being written, `<name>.tmp` for a link being swapped,
`.deleting-<name>-<token>` for a tree being removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
DELETING_PREFIX = ".deleting-"


def token() -> str:
    """A short random suffix for private temporary names."""
    return secrets.token_hex(4)


def temp_prefix(name: str) -> str:
    """How the temporary files `atomic_write` makes for `name` start (for crash cleanup)."""
    return f".{name}{TMP_SUFFIX}-"


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


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write until every byte is written (a write may take fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def atomic_write(path: Path, *, mode: int = 0o666) -> Iterator[int]:
    """A `with` block writing to an fd that replaces `path` whole, only if the block succeeds.

    The bytes go to a temporary file beside `path`, which is fsynced, renamed over `path`,
    and the directory synced; on any error the temporary file is removed and `path` is
    untouched. `mode`: permission bits before the umask (open()'s default)."""
    temp = path.with_name(f"{temp_prefix(path.name)}{token()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file whole or not at all (see `atomic_write`)."""
    with atomic_write(path) as fd:
        write_all(fd, data)


def symlink_atomic(link: Path, target: str) -> None:
    """Point `link` at `target` in one step: a new link under `<link>.tmp`, then rename over."""
    tmp = link.with_name(link.name + TMP_SUFFIX)
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
