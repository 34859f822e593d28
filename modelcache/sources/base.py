"""The L3 contract: one model's location in object storage (bucket + prefix, or a directory).

Backends (oss://, s3://, file://, http(s)://) implement `ObjectClient`; the
downloader and `publish` use only this interface. Keys are relative to the
location's prefix: `v1/manifest.json`, never `bucket/prefix/v1/...`.
Messages name the URL and key, never a credential.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

Progress = Callable[[int], None]
"""Called with a number of bytes just transferred."""

SCHEMES = ("oss", "s3", "file", "http", "https")


class SourceError(Exception):
    """Anything that went wrong talking to L3; the message names the URL and key."""


class InvalidSourceURL(SourceError, ValueError):  # noqa: N818 - reads as what it is
    """The URL cannot name a model location (unknown scheme, missing bucket...): bad input."""


class ObjectNotFound(SourceError):  # noqa: N818
    """No object at that key."""


class ObjectChanged(SourceError):  # noqa: N818
    """The object's ETag is not the one a download was pinned to: start over."""


class SourceUnreachable(SourceError):  # noqa: N818
    """The endpoint did not answer (DNS, connection refused, timeout)."""


class SourceReadOnly(SourceError):  # noqa: N818
    """The source cannot be written (http(s)://)."""


@dataclass(frozen=True)
class SourceURL:
    """A parsed model location. `bucket` is empty for file:// and http(s)://."""

    scheme: str
    bucket: str
    prefix: str
    raw: str

    def key(self, relative: str) -> str:
        """The full object key (or path below the directory) of a key relative to the prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return self.raw


def parse_source_url(url: str) -> SourceURL:
    """Parse `oss://bucket/prefix`, `s3://bucket/prefix`, `file:///dir`, `http(s)://host/path`,
    or a plain local path (taken as file://)."""
    if not url:
        raise InvalidSourceURL("empty source URL")
    if "://" not in url:
        return SourceURL("file", "", str(Path(url).expanduser().resolve()), url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if "@" in parts.netloc:  # user[:password]@host: never echoed, never stored
        host = parts.netloc.rpartition("@")[2]
        raise InvalidSourceURL(
            f"{parts.scheme}://***@{host}{parts.path}: credentials in a URL are refused "
            "(they would be written to logs, events and the recorded source); use a Secret "
            "or environment variables"
        )
    if scheme not in SCHEMES:
        raise InvalidSourceURL(
            f"unknown URL scheme {parts.scheme!r} in {url!r}: use oss://, s3://, file://, "
            "http(s)://, or a local directory path"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidSourceURL(f"file URL {url!r} names a host; use file:///absolute/path")
        return SourceURL("file", "", str(Path(parts.path).resolve()), url)
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise InvalidSourceURL(f"URL {url!r} has no host")
        base = f"{scheme}://{parts.netloc}"
        return SourceURL(scheme, "", base + parts.path.rstrip("/"), url)
    if not parts.netloc:
        raise InvalidSourceURL(f"URL {url!r} has no bucket: use {scheme}://bucket/prefix")
    return SourceURL(scheme, parts.netloc, parts.path.strip("/"), url)


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD says about an object. `crc64` is x-oss-hash-crc64ecma when the store sends it."""

    key: str
    size: int
    etag: str
    crc64: int | None = None


@dataclass(frozen=True)
class Credentials:
    """Explicit endpoint and keys (flags); None fields fall back to the environment."""

    endpoint: str | None = None
    access_key_id: str | None = None
    access_key_secret: str | None = None
    session_token: str | None = None
    region: str | None = None

    def __repr__(self) -> str:  # never print secrets, not even in a traceback
        key = "set" if self.access_key_id else "unset"
        return f"Credentials(endpoint={self.endpoint!r}, access_key_id=<{key}>)"


def env_first(*names: str) -> str | None:
    """The first non-empty environment variable among `names`."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class ObjectClient(ABC):
    """One model location in L3. Thread-safe: the downloader calls it from many threads."""

    def __init__(self, url: SourceURL) -> None:
        self.url = url

    @property
    def writable(self) -> bool:
        return True

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size, ETag (and CRC-64 when known); raises ObjectNotFound."""

    @abstractmethod
    def iter_range(
        self, key: str, start: int, end: int, *, etag: str | None = None, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        """Bytes [start, end) of the object, in chunks. With `etag`, raise ObjectChanged
        if the object is no longer that version (If-Match, and the response's ETag)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """A whole small object (a manifest, the index); raises ObjectNotFound."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object in one request."""

    @abstractmethod
    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        """Create a small object only if none is there, atomically (a conditional write);
        False when one was. How a version name is claimed by one publish only."""

    @abstractmethod
    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        """Upload a file; multipart above the backend's threshold."""

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> None:
        """Delete objects; a missing key is not an error."""

    def list_keys(self) -> list[str]:
        """Every key under the prefix (relative to it): how a lost index is rebuilt from the
        manifests. Stores that cannot list raise SourceError saying so."""
        raise SourceError(f"{self.url} cannot be listed ({self.url.scheme}:// has no listing)")

    def expected_etag(self, path: Path) -> str | None:
        """The ETag the store gives `path`'s bytes once uploaded by `put_file`, where it is a
        checksum of them (S3: MD5, or MD5 of the parts' MD5s); None where it is not."""
        return None

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def describe(self, key: str) -> str:
        """`oss://bucket/prefix/key` for messages."""
        base = self.url.raw.rstrip("/")
        return f"{base}/{key}"
