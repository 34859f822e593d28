"""The pods' HTTP servers bound what a request can hold: each refused framing gets its 4xx,
an idle connection is closed, and connections beyond the cap get a 503 without a thread.
Spoken to over raw sockets, as a hostile client would."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from modelcache.runtime import ReloadServer, ReloadService


@pytest.fixture
def server() -> Iterator[ReloadServer]:
    service = ReloadService([])
    with ReloadServer(
        service, host="127.0.0.1", port=0, max_connections=3, idle_timeout=1.0
    ) as running:
        yield running


def exchange(server: ReloadServer, request: bytes) -> bytes:
    """Send one raw request; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def status_and_reason(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    reason = json.loads(body)["reason"] if body.startswith(b"{") else ""
    return status, reason


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        (b"Content-Length: -5\r\n", 400, "bad Content-Length"),
        (b"Content-Length: abc\r\n", 400, "bad Content-Length"),
        (b"Content-Length: 99999999999\r\n", 413, "body over"),
        (b"Transfer-Encoding: chunked\r\n", 411, "Content-Length"),
        (b"", 411, "Content-Length header is required"),
    ],
)
def test_refused_framing_gets_its_4xx(
    server: ReloadServer, headers: bytes, status: int, reason: str
) -> None:
    request = b"POST /modelcache/reload HTTP/1.1\r\nHost: pod\r\n" + headers + b"\r\n"
    got, why = status_and_reason(exchange(server, request))
    assert got == status
    assert reason in why


def test_too_many_headers_is_a_431(server: ReloadServer) -> None:
    headers = b"".join(b"X-Pad-%d: x\r\n" % i for i in range(150))
    answer = exchange(server, b"GET /modelcache/status HTTP/1.1\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.0 431") or answer.startswith(b"HTTP/1.1 431")


def test_an_idle_connection_is_closed(server: ReloadServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        assert conn.recv(1) == b"", "closed by the server, not kept with its thread"


def test_a_body_that_never_comes_frees_the_connection(server: ReloadServer) -> None:
    request = b"POST /modelcache/reload HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"
    assert exchange(server, request) == b""


def test_connections_beyond_the_cap_get_a_503(server: ReloadServer) -> None:
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    try:
        answer = exchange(server, b"GET /modelcache/status HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503")
    finally:
        for conn in held:
            conn.close()

    # Once they are gone, the server answers again.
    def ok() -> bytes:
        return exchange(server, b"GET /modelcache/status HTTP/1.1\r\nConnection: close\r\n\r\n")

    for _ in range(50):
        answer = ok()
        if answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"):
            break
    else:
        raise AssertionError(f"no 200 after the held connections closed: {answer[:80]!r}")
