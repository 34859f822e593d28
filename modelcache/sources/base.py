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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from modelcache.api.manifest import MANIFEST_MAX_BYTES
from modelcache.api.urls import SecretInURL, check_url, redact_url

Progress = Callable[[int], None]
"""Called with a number of bytes just transferred."""

SCHEMES = ("oss", "s3", "file", "http", "https")
SOURCE_ADVICE = (
    "credentials go in a Secret or the environment (a literal '@' in an http(s) path is "
    "written %40; a directory is given as its plain path)"
)


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


class ObjectTooLarge(SourceError):  # noqa: N818
    """A small object (manifest, index) is over the cap its reader gave: refused unread."""


DOCUMENT_LIMIT = MANIFEST_MAX_BYTES
"""`get_bytes`'s default cap: the largest document read whole (a manifest); see api.manifest."""


def read_within(chunks: Iterator[bytes], limit: int, where: str, size: int | None = None) -> bytes:
    """Join `chunks` but read no more than `limit` + 1 bytes: ObjectTooLarge past `limit`.
    `size` is what the response announced (Content-Length), refused before a byte is read."""
    if size is not None and size > limit:
        raise ObjectTooLarge(too_large(where, limit, size))
    held: list[bytes] = []
    total = 0
    for chunk in chunks:
        held.append(chunk)
        total += len(chunk)
        if total > limit:
            raise ObjectTooLarge(too_large(where, limit, None))
    return b"".join(held)


def too_large(where: str, limit: int, size: int | None) -> str:
    held = f" ({size:,} bytes)" if size is not None else ""
    return f"{where} is larger than its cap of {limit:,} bytes{held}: refused unread"


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
    try:  # user:password@, ?token=...: never echoed, never stored
        check_url(url, "source URL", SOURCE_ADVICE)
    except SecretInURL as error:
        raise InvalidSourceURL(str(error)) from None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
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
    """Explicit endpoint and keys (flags, a Secret); None fields fall back to the environment.
    `endpoint_origin` names where the endpoint came from, for the error that refuses it."""

    endpoint: str | None = None
    access_key_id: str | None = None
    access_key_secret: str | None = None
    session_token: str | None = None
    region: str | None = None
    endpoint_origin: str = field(default="--endpoint", compare=False)

    def __repr__(self) -> str:  # never print secrets, not even in a traceback
        key = "set" if self.access_key_id else "unset"
        shown = redact_url(self.endpoint) if self.endpoint is not None else None
        return f"Credentials(endpoint={shown!r}, access_key_id=<{key}>)"


def env_first(*names: str) -> str | None:
    """The first non-empty environment variable among `names`."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def resolve_endpoint(credentials: Credentials | None, *env_names: str) -> str | None:
    """The endpoint of the flags or Secret, else of the first set variable of `env_names`;
    InvalidSourceURL naming which one when it carries credentials or a query (`check_url`)."""
    value: str | None
    if credentials is not None and credentials.endpoint:
        value, origin = credentials.endpoint, credentials.endpoint_origin
    else:
        origin = next((name for name in env_names if os.environ.get(name)), "")
        value = os.environ.get(origin) if origin else None
    if not value:
        return None
    try:
        return check_url(value, origin)
    except SecretInURL as error:
        raise InvalidSourceURL(str(error)) from None


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
    def get_bytes(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes:
        """A whole small object (a manifest, the index); raises ObjectNotFound, and
        ObjectTooLarge past `limit` bytes, having read at most `limit` + 1 of them."""

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
