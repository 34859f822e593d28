"""file:///dir and plain directory paths: a model location on a local or mounted filesystem.

Writes are atomic (`modelcache.fs.atomic_write`: temp file, fsync, rename, fsync of the
directory), so a reader never sees half a file, just as with an object store. The ETag
is made from the inode, mtime and size: an atomic replace or an in-place write both
change it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from modelcache.fs import NotARegularFile, TooLarge, atomic_write, read_capped, write_all
from modelcache.sources.base import (
    DOCUMENT_LIMIT,
    InvalidSourceURL,
    ObjectChanged,
    ObjectClient,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    Progress,
    SourceError,
    SourceURL,
    too_large,
)

COPY_CHUNK = 4 * 1024 * 1024


def file_etag(stat: os.stat_result) -> str:
    """A version tag for a file: what changes when its content is replaced or rewritten."""
    return f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"


class LocalClient(ObjectClient):
    """A directory; keys are relative paths below it."""

    def __init__(self, url: SourceURL) -> None:
        super().__init__(url)
        if url.scheme != "file":
            raise InvalidSourceURL(f"{url} is not a file:// URL or directory path")
        self.root = Path(url.prefix)

    def __repr__(self) -> str:
        return f"LocalClient({self.url.raw!r})"

    def path(self, key: str) -> Path:
        """The file for `key`; a key that would leave the directory is refused."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise SourceError(f"key {key!r} is outside {self.url}")
        return path

    def describe(self, key: str) -> str:
        return str(self.root / key)

    # -- reads ------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo:
        stat = self._stat(key)
        return ObjectInfo(key=key, size=stat.st_size, etag=file_etag(stat))

    def _stat(self, key: str) -> os.stat_result:
        path = self.path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no file {path}") from None
        if not path.is_file():
            raise ObjectNotFound(f"{path} is not a regular file")
        return stat

    def iter_range(
        self, key: str, start: int, end: int, *, etag: str | None = None, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        if end <= start:
            return
        fd = self._open(key)
        try:
            self._check_version(key, fd, etag)
            offset = start
            while offset < end:
                data = os.pread(fd, min(chunk, end - offset), offset)
                if not data:
                    break
                offset += len(data)
                yield data
            self._check_version(key, fd, etag)  # an in-place write while reading
        finally:
            os.close(fd)

    def _open(self, key: str) -> int:
        path = self.path(key)
        try:
            return os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no file {path}") from None

    def _check_version(self, key: str, fd: int, etag: str | None) -> None:
        if etag is None:
            return
        actual = file_etag(os.fstat(fd))
        if actual != etag:
            raise ObjectChanged(f"{self.describe(key)} changed: {actual}, expected {etag}")

    def get_bytes(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes:
        """The file's bytes, read within `limit` (a FIFO or a directory is not an object)."""
        path = self.path(key)
        try:
            return read_capped(path, limit, what="object")
        except TooLarge:
            raise ObjectTooLarge(too_large(self.describe(key), limit, None)) from None
        except (FileNotFoundError, NotADirectoryError, NotARegularFile):
            raise ObjectNotFound(f"no file {self.describe(key)}") from None

    # -- writes -----------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        with self._atomic(key) as fd:
            write_all(fd, data)

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.claim")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, target)  # fails if the target exists: the whole file, or nothing
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)
        return True

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        with self._atomic(key) as out, path.open("rb") as source:
            while data := source.read(COPY_CHUNK):
                write_all(out, data)
                if progress is not None:
                    progress(len(data))

    def _atomic(self, key: str) -> contextlib.AbstractContextManager[int]:
        """An fd to write `key` through: the file appears whole when the block succeeds."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(target, mode=0o644)

    def list_keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            path = self.path(key)
            path.unlink(missing_ok=True)
