"""`get_bytes` reads a small object within a cap, on every scheme against a real server
(SeaweedFS via oss2 and boto3, a directory, HTTP): at the cap it is read, one byte past it
is refused, and an object far past it is refused without being read into memory."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelcache.sources import DOCUMENT_LIMIT, ObjectNotFound, ObjectTooLarge, open_source
from tests.integration.sources.conftest import Location

KiB, MiB = 1024, 1024 * 1024
LIMIT = 64 * KiB


def test_an_object_at_its_limit_is_read_and_one_byte_more_is_refused(location: Location) -> None:
    location.put("v1/at.json", b"a" * LIMIT)
    location.put("v1/over.json", b"b" * (LIMIT + 1))
    assert location.client.get_bytes("v1/at.json", limit=LIMIT) == b"a" * LIMIT
    with pytest.raises(ObjectTooLarge) as caught:
        location.client.get_bytes("v1/over.json", limit=LIMIT)
    message = str(caught.value)
    assert f"is larger than its cap of {LIMIT:,} bytes" in message
    assert location.client.describe("v1/over.json") in message
    assert "bbbb" not in message
    with pytest.raises(ObjectNotFound):
        location.client.get_bytes("v1/absent.json", limit=LIMIT)


def test_a_huge_object_is_refused_without_being_read_into_memory(location: Location) -> None:
    huge = DOCUMENT_LIMIT + MiB  # one past the default (the manifest cap)
    location.put("v1/manifest.json", b"{" + b" " * (huge - 2) + b"}")
    location.put("v1/small.json", b"{}")
    tracemalloc.start()
    try:
        with pytest.raises(ObjectTooLarge, match=f"cap of {DOCUMENT_LIMIT:,} bytes"):
            location.client.get_bytes("v1/manifest.json")
        with pytest.raises(ObjectTooLarge, match=f"cap of {MiB:,} bytes"):
            location.client.get_bytes("v1/manifest.json", limit=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"{peak:,} bytes held to refuse a {huge:,}-byte object"
    # the connection the refusal left unread is not reused for the next answer
    assert location.client.get_bytes("v1/small.json") == b"{}"


class EndlessHandler(BaseHTTPRequestHandler):
    """Answers every GET with a body that has no Content-Length and never ends on its own:
    a server (or a man in the middle) that would stream a client out of memory."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        chunk = b" " * (64 * KiB)
        try:
            for _ in range(4096):  # 256 MiB at most, should the client never stop reading
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return


@pytest.fixture
def endless_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EndlessHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_body_without_a_length_is_read_no_further_than_the_cap(endless_server: str) -> None:
    client = open_source(endless_server)
    tracemalloc.start()
    try:
        with pytest.raises(ObjectTooLarge, match=f"cap of {MiB:,} bytes"):
            client.get_bytes("v1/manifest.json", limit=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"{peak:,} bytes held to refuse an endless body"
