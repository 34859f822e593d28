"""http(s)://host/path: a read-only model location on any web server that answers Range.

The version tag is the ETag when the server sends one, else Last-Modified;
strong ETags are pinned with If-Match, and every response's tag is compared
with the pinned one as well, since plenty of servers ignore If-Match.
One urllib3 pool (thread-safe) serves all threads; urllib3 retries nothing:
the downloader decides what to retry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import urllib3
from urllib3.exceptions import HTTPError

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
    SourceReadOnly,
    SourceUnreachable,
    SourceURL,
    read_within,
)

POOL_SIZE = 64
LAST_MODIFIED = "last-modified:"


def version_tag(headers: urllib3.HTTPHeaderDict) -> str:
    """ETag without quotes (weak ones keep their W/), else `last-modified:<date>`, else ""."""
    etag = headers.get("ETag")
    if etag:
        weak = etag.startswith("W/")
        bare = etag.removeprefix("W/").strip('"')
        return f"W/{bare}" if weak else bare
    modified = headers.get("Last-Modified")
    return f"{LAST_MODIFIED}{modified}" if modified else ""


def _length(response: urllib3.BaseHTTPResponse) -> int | None:
    """The announced Content-Length when it is plain digits, else None (the read is bounded
    anyway)."""
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isascii() and value.isdigit() else None


class HttpClient(ObjectClient):
    """GET, HEAD and ranged GET below a base URL."""

    def __init__(
        self,
        url: SourceURL,
        *,
        pool_size: int = POOL_SIZE,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(url)
        if url.scheme not in ("http", "https"):
            raise InvalidSourceURL(f"{url} is not an http(s):// URL")
        self.base = url.prefix
        self._pool = urllib3.PoolManager(
            maxsize=pool_size,
            block=False,
            # no retries (the downloader decides), but follow redirects (CDNs, mirrors)
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5),
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
        )

    def __repr__(self) -> str:
        return f"HttpClient({self.url.raw!r})"

    @property
    def writable(self) -> bool:
        return False

    def object_url(self, key: str) -> str:
        return f"{self.base}/{quote(key)}"

    def describe(self, key: str) -> str:
        return self.object_url(key)

    # -- reads ------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo:
        response = self._request("HEAD", key)
        length = response.headers.get("Content-Length")
        if length is None:
            raise SourceError(f"{self.describe(key)}: the server sent no Content-Length")
        return ObjectInfo(key=key, size=int(length), etag=version_tag(response.headers))

    def iter_range(
        self, key: str, start: int, end: int, *, etag: str | None = None, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        if end <= start:
            return
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        if etag and not etag.startswith(("W/", LAST_MODIFIED)):
            headers["If-Match"] = f'"{etag}"'
        response = self._request("GET", key, headers, stream=True)
        try:
            got = version_tag(response.headers)
            if etag and got != etag:
                raise ObjectChanged(f"{self.describe(key)} changed: {got!r}, expected {etag!r}")
            full = response.status == 200 and start == 0
            if response.status != 206 and not (full and response.length_remaining == end):
                raise SourceError(f"{self.describe(key)}: the server does not support Range")
            yield from self._stream(key, response, chunk)
        finally:
            response.release_conn()

    def _stream(self, key: str, response: urllib3.BaseHTTPResponse, chunk: int) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk)
        except HTTPError as error:
            raise SourceUnreachable(
                f"{self.describe(key)}: connection broke ({type(error).__name__})"
            ) from None

    def get_bytes(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes:
        """Refused on its Content-Length before the body is read, and read no further than
        `limit` + 1 bytes when the server sends none (chunked) or understates it."""
        response = self._request("GET", key, stream=True)
        try:
            chunks = self._stream(key, response, min(limit + 1, 1 << 20))
            return read_within(chunks, limit, self.describe(key), _length(response))
        except ObjectTooLarge:
            response.close()  # the rest of the body is never read: the connection cannot be reused
            raise
        finally:
            response.release_conn()

    def _request(
        self, method: str, key: str, headers: dict[str, str] | None = None, *, stream: bool = False
    ) -> urllib3.BaseHTTPResponse:
        url = self.object_url(key)
        try:
            response = self._pool.request(method, url, headers=headers, preload_content=not stream)
        except HTTPError as error:
            raise SourceUnreachable(f"{url} unreachable ({type(error).__name__})") from None
        if response.status < 400:
            return response
        response.drain_conn()
        response.release_conn()
        status = response.status
        if status in (404, 410):
            raise ObjectNotFound(f"no object {url} ({status})")
        if status == 412:
            raise ObjectChanged(f"{url} changed since it was first read (412)")
        if status >= 500 or status == 429:
            raise SourceUnreachable(f"{url} answered {status}")
        raise SourceError(f"{url} answered {status}")

    # -- writes: none -----------------------------------------------------------------------
    def _read_only(self) -> SourceReadOnly:
        return SourceReadOnly(f"{self.url} is read-only: http(s) sources cannot be written")

    def put_bytes(self, key: str, data: bytes) -> None:
        raise self._read_only()

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        raise self._read_only()

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        raise self._read_only()

    def delete(self, keys: Sequence[str]) -> None:
        raise self._read_only()
