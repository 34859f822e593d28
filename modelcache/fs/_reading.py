"""Read a document from disk with its size cap checked first, never blocking on a special file.

A FIFO, a device or a directory where a config or a resume record should be must give one
clear error, not a hang: the file is opened non-blocking and checked to be regular before
a byte is read, and no more than its cap (plus one byte, to tell "too large") is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


class FileRefused(OSError):  # noqa: N818 - reads as what happened
    """The file exists but is not something we read: the message names it and why."""


class NotARegularFile(FileRefused):
    """A FIFO, device, socket or directory where a regular file was expected."""


class TooLarge(FileRefused):
    """Larger than the cap of the document it should hold."""


def kind_of(mode: int) -> str:
    """'a FIFO', 'a directory'...: what a non-regular file is, for an error message."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_capped(path: str | os.PathLike[str], limit: int, *, what: str = "file") -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them.

    Raises FileNotFoundError (and other OSErrors) as open() does, NotARegularFile for a
    special file, TooLarge past `limit`; messages name the file, never echo its bytes."""
    where = os.fspath(path)
    fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotARegularFile(
                f"{what} {where} is {kind_of(status.st_mode)}, not a regular file"
            )
        if status.st_size > limit:
            raise TooLarge(_too_large(what, where, limit, status.st_size))
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:  # grew after fstat
            raise TooLarge(_too_large(what, where, limit, None))
        return data
    finally:
        os.close(fd)


def is_regular(path: Path) -> bool:
    """Whether `path` is a regular file itself (not through a symlink)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _too_large(what: str, where: str, limit: int, size: int | None) -> str:
    held = f" ({size:,} bytes)" if size is not None else ""
    return f"{what} {where} is larger than its cap of {limit:,} bytes{held}"
