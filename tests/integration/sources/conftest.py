"""Model locations on real servers, one per scheme: SeaweedFS through oss2 and boto3, a
directory, and a small Range-capable HTTP server on loopback.

Each `Location` has the client under test and a writer that changes objects
behind its back (the client itself where the scheme is writable).
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelcache.sources import ObjectClient, open_source
from modelcache.sources.local import file_etag
from modelcache.testing import ObjectStore
from modelcache.testing.objectstore import ACCESS_KEY, SECRET_KEY

BUCKET = "modelcache-sources"
SCHEMES = ("oss", "s3", "file", "http")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class RangeHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files below `server.root` with single byte ranges, ETag and If-Match:
    what object stores and CDNs answer, and what SimpleHTTPRequestHandler does not."""

    server: RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is for assertions."""

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        path = (self.server.root / self.path.lstrip("/").split("?")[0]).resolve()
        if not path.is_relative_to(self.server.root) or not path.is_file():
            self._empty(HTTPStatus.NOT_FOUND)
            return
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            etag = f'"{file_etag(stat)}"'
            if_match = self.headers.get("If-Match")
            if if_match and if_match != etag:
                self._empty(HTTPStatus.PRECONDITION_FAILED)
                return
            start, end, status = 0, stat.st_size, HTTPStatus.OK
            match = _RANGE.match(self.headers.get("Range", ""))
            if match:
                start = int(match.group(1))
                end = min(stat.st_size, int(match.group(2)) + 1 if match.group(2) else stat.st_size)
                status = HTTPStatus.PARTIAL_CONTENT
            self.send_response(status)
            self.send_header("Content-Length", str(end - start))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{stat.st_size}")
            self.end_headers()
            if body:
                stop = self.server.cut(path, start, end)
                self.close_connection = stop < end  # a short body: the client sees a break
                self._copy(handle, start, stop)

    def _copy(self, handle: object, start: int, end: int) -> None:
        fd = handle.fileno()  # type: ignore[attr-defined]
        offset = start
        try:
            while offset < end:
                data = os.pread(fd, min(256 * 1024, end - offset), offset)
                if not data:
                    break
                self.wfile.write(data)
                offset += len(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _empty(self, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class RangeServer(ThreadingHTTPServer):
    """`faults[path] = n`: the next n GETs of that file break off halfway, as a flaky link does."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.faults: dict[Path, int] = {}
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), RangeHandler)

    def cut(self, path: Path, start: int, end: int) -> int:
        """Where this response's body stops: `end`, or halfway for a pending fault."""
        with self._lock:
            if self.faults.get(path, 0) <= 0:
                return end
            self.faults[path] -= 1
        return start + (end - start) // 2

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RangeServer]:
    """A directory served over HTTP on loopback."""
    server = RangeServer(tmp_path_factory.mktemp("http-root"))
    thread = threading.Thread(target=server.serve_forever, name="range-server", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def http_root(http_server: RangeServer) -> tuple[Path, str]:
    """The served directory and the server's base URL."""
    return http_server.root, http_server.url


@dataclass
class Location:
    """A fresh model location: `client` is under test, `writer` changes its objects."""

    scheme: str
    client: ObjectClient
    writer: ObjectClient

    def put(self, key: str, data: bytes) -> None:
        self.writer.put_bytes(key, data)


@pytest.fixture
def store_env(object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    """Point oss:// and s3:// at the session's SeaweedFS."""
    object_store.create_bucket(BUCKET)
    monkeypatch.setenv("OSS_ENDPOINT", object_store.endpoint)
    for name in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", object_store.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return object_store


def make_location(
    scheme: str, store: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> Location:
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    if scheme in ("oss", "s3"):
        client = open_source(f"{scheme}://{BUCKET}/{prefix}")
        return Location(scheme, client, client)
    if scheme == "file":
        client = open_source(f"file://{tmp_path / 'l3' / prefix}")
        return Location(scheme, client, client)
    root, base = http_root
    writer = open_source(str(root / prefix))
    return Location(scheme, open_source(f"{base}/{prefix}"), writer)


@pytest.fixture(params=SCHEMES)
def location(
    request: pytest.FixtureRequest,
    store_env: ObjectStore,
    tmp_path: Path,
    http_root: tuple[Path, str],
) -> Location:
    """Each test gets its own prefix, so tests never see each other's objects."""
    return make_location(request.param, store_env, tmp_path, http_root)
