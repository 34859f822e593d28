"""Answers whose body is a region of a file, sent by the selector thread with sendfile: the
bytes arrive exactly, keep-alive goes on after them, and however the answer ends (sent,
the client gone or too slow, the file short, the handler failing, the server stopping)
the file is closed and its owner told how much went out once."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Queue
from urllib.parse import parse_qs, urlsplit

import pytest

from modelcache.serving import BoundedHandler, BoundedHTTPServer, FileRegion
from tests.unit.serving.clients import read_to_close, reason_of, status_of

MIB = 1024 * 1024


class _Files(BoundedHandler):
    """GET /file?offset=&length=: that region of the server's file; /boom fails after
    handing the file over."""

    server: _FileServer

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
        fd = os.open(self.server.path, os.O_RDONLY)
        self.server.opened.append(fd)
        size = os.fstat(fd).st_size
        region = FileRegion(
            fd, query.get("offset", 0), query.get("length", size), self.server.closed.put
        )
        self.send_file(200, region, "application/octet-stream")
        if url.path == "/boom":
            raise RuntimeError("a bug after the file was handed over")


class _FileServer(BoundedHTTPServer):
    def __init__(self, path: Path, **bounds: float | None) -> None:
        super().__init__(("127.0.0.1", 0), _Files, **bounds)  # type: ignore[arg-type]
        self.path = path
        self.opened: list[int] = []
        self.closed: Queue[int] = Queue()  # bytes sent, one per body that ended


@pytest.fixture
def content(tmp_path: Path) -> bytes:
    data = os.urandom(3 * MIB + 17)
    (tmp_path / "blob").write_bytes(data)
    return data


@contextmanager
def serving(tmp_path: Path, **bounds: float | None) -> Iterator[_FileServer]:
    server = _FileServer(tmp_path / "blob", **bounds).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def files(tmp_path: Path, content: bytes) -> Iterator[_FileServer]:
    with serving(tmp_path) as server:
        yield server


def _get(path: str, *, close: bool = False) -> bytes:
    connection = "close" if close else "keep-alive"
    return f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\n\r\n".encode()


def read_answer(conn: socket.socket) -> tuple[int, bytes]:
    """One answer on a kept-open connection: its status and its body, by Content-Length."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(65536)
        assert chunk, f"closed before the head ended: {received[:200]!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = conn.recv(min(1 << 20, length - len(body)))
        assert chunk, f"closed after {len(body)} of {length} body bytes"
        body += chunk
    return status_of(head), body


def _fd_is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_file_body_arrives_exactly_and_the_connection_serves_on(
    files: _FileServer, content: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", files.server_port), timeout=20) as conn:
        conn.sendall(_get("/file"))
        assert read_answer(conn) == (200, content)
        conn.sendall(_get("/file?offset=1000&length=5000"))
        assert read_answer(conn) == (200, content[1000:6000])
    assert [files.closed.get(timeout=20), files.closed.get(timeout=20)] == [len(content), 5000]


def test_a_reader_that_takes_nothing_is_cut_at_a_deadline_that_grows_with_the_length(
    tmp_path: Path,
) -> None:
    """32 MiB at a 16 MiB/s floor: 0.3 s + 2 s, then the connection is closed, the file
    too, and the owner hears how little went out; others are served meanwhile."""
    (tmp_path / "blob").write_bytes(os.urandom(32 * MIB))
    with serving(tmp_path, write_timeout=0.3, min_file_rate=16 * MIB) as server:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.server_port))
        stalled.sendall(_get("/file"))
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=20) as other:
            other.sendall(_get("/file?length=10"))
            assert read_answer(other)[0] == 200
        assert server.closed.get(timeout=20) == 10
        sent = server.closed.get(timeout=60)
        assert 0 < sent < 32 * MIB
        assert _fd_is_closed(server.opened[0])
        stalled.close()


def test_a_client_leaving_mid_body_closes_the_file(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(os.urandom(32 * MIB))
    with serving(tmp_path) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=20) as conn:
            conn.sendall(_get("/file"))
            assert conn.recv(65536)
        sent = server.closed.get(timeout=30)
        assert sent < 32 * MIB
        assert _fd_is_closed(server.opened[0])


def test_the_shared_rate_holds_bodies_back_without_holding_it_against_them(
    tmp_path: Path, content: bytes
) -> None:
    """Two 1 MiB bodies under a 2 MiB/s cap shared: about a second, far past their own
    deadlines (0.2 s + 1/64 s), yet both arrive whole; and not faster than the cap."""
    with serving(
        tmp_path, write_timeout=0.2, min_file_rate=64 * MIB, max_file_rate=2 * MIB
    ) as server:
        answers: list[tuple[int, bytes]] = []

        def fetch() -> None:
            with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as c:
                c.sendall(_get(f"/file?length={MIB}"))
                answers.append(read_answer(c))

        started = time.monotonic()
        readers = [threading.Thread(target=fetch) for _ in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(60)
        elapsed = time.monotonic() - started
        assert answers == [(200, content[:MIB])] * 2
        burst = 2 * MIB * 0.05
        assert elapsed >= (2 * MIB - burst) / (2 * MIB) * 0.9


def test_a_file_shorter_than_its_region_ends_the_connection(
    files: _FileServer, content: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", files.server_port), timeout=20) as conn:
        conn.sendall(_get(f"/file?length={len(content) + 1000}"))
        received = read_to_close(conn)
    assert received.endswith(content)
    assert f"Content-Length: {len(content) + 1000}".encode() in received
    assert files.closed.get(timeout=20) == len(content)


def test_a_handler_failing_after_handing_over_its_file_answers_500_and_closes_it(
    files: _FileServer,
) -> None:
    with socket.create_connection(("127.0.0.1", files.server_port), timeout=20) as conn:
        conn.sendall(_get("/boom"))
        answer = read_to_close(conn)
    assert status_of(answer) == 500
    assert reason_of(answer) == "the handler failed (RuntimeError): see the server's log"
    assert files.closed.get(timeout=20) == 0
    assert _fd_is_closed(files.opened[0])


def test_stopping_the_server_closes_the_files_of_bodies_in_progress(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(os.urandom(32 * MIB))
    server = _FileServer(tmp_path / "blob").start()
    stalled = socket.create_connection(("127.0.0.1", server.server_port), timeout=20)
    try:
        stalled.sendall(_get("/file"))
        assert stalled.recv(65536)
        server.stop()
        assert server.closed.get(timeout=20) < 32 * MIB
        assert _fd_is_closed(server.opened[0])
    finally:
        stalled.close()
