"""The client against peers that break the protocol, each a raw socket answering one
canned answer: more bytes announced than asked, a body shorter or longer than announced,
no length, an encoded body, a trickle; every one a PeerError, never more bytes than asked."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from modelcache.fleet import PeerBusy, PeerClient, PeerError, PeerMisbehaved, PeerUnreachable

SHA = "ab" * 32
SIZE = 4 * 1024 * 1024


@contextmanager
def bad_peer(answer: bytes, trickle: tuple[bytes, float, int] = (b"", 0.0, 0)) -> Iterator[str]:
    """A peer at the URL yielded that reads a request head, sends `answer`, then `count`
    times `chunk` every `every` seconds (trickle), then closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            received = b""
            while b"\r\n\r\n" not in received and (chunk := conn.recv(65536)):
                received += chunk
            chunk, every, count = trickle
            try:
                conn.sendall(answer)
                for _ in range(count):
                    time.sleep(every)
                    conn.sendall(chunk)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(30)


def head(length: int | None, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client(url: str, **bounds: float) -> PeerClient:
    return PeerClient("bad", url, "t" * 43, **bounds)


def test_a_peer_announcing_more_than_the_piece_is_refused_before_any_byte() -> None:
    announced = pytest.raises(PeerMisbehaved, match=f"announces {SIZE + 1} bytes")
    with bad_peer(head(SIZE + 1) + b"x" * 100) as url, announced:
        client(url).piece(SHA, 0, SIZE)


def test_a_length_other_than_the_one_the_caller_knows_is_refused() -> None:
    wrong = pytest.raises(PeerMisbehaved, match="where 50 were asked")
    with bad_peer(head(100) + b"x" * 100) as url, wrong:
        client(url).piece(SHA, 0, SIZE, length=50)


def test_a_body_shorter_than_announced_is_an_error() -> None:
    with bad_peer(head(1000) + b"x" * 600) as url:
        body = client(url).piece(SHA, 0, SIZE)
        with pytest.raises((PeerMisbehaved, PeerUnreachable)):
            b"".join(body)


def test_bytes_past_the_announced_length_are_never_handed_on() -> None:
    with bad_peer(head(100) + b"x" * 100 + b"EXTRA" * 1000) as url:
        assert b"".join(client(url).piece(SHA, 0, SIZE)) == b"x" * 100


@pytest.mark.parametrize(
    "answer",
    [
        head(None, "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n",
        head(5, "Content-Encoding: gzip") + b"hello",
        head(None, "Content-Length: +5") + b"hello",
        head(None, "Connection: close") + b"hello",
    ],
)
def test_a_body_without_a_plain_length_is_refused(answer: bytes) -> None:
    with bad_peer(answer) as url, pytest.raises(PeerError):
        b"".join(client(url).piece(SHA, 0, SIZE))


def test_a_peer_trickling_within_each_read_timeout_is_cut_at_the_overall_deadline() -> None:
    """50 bytes every 0.1 s never lets a read time out, but 2,000 bytes at a 1,000 B/s
    floor (plus 1 s of timeouts) is over well before the trickle would end (4 s)."""
    with bad_peer(head(2000), (b"x" * 50, 0.1, 40)) as url:
        body = client(url, connect_timeout=0.5, read_timeout=0.5, min_rate=1000).piece(SHA, 0, SIZE)
        with pytest.raises(PeerUnreachable, match="too slow"):
            for _ in body:
                pass
        assert body.received < 2000


def test_a_peer_that_never_answers_is_unreachable_after_the_read_timeout() -> None:
    """It holds the connection for 3 s without a byte; the client gives up at 0.5 s."""
    silent = pytest.raises(PeerUnreachable, match="Timeout")
    with bad_peer(b"", (b"", 3.0, 1)) as url, silent:
        client(url, read_timeout=0.5).piece(SHA, 0, SIZE)


@contextmanager
def dropping_peer(drops: int, answer: bytes) -> Iterator[tuple[str, list[int]]]:
    """A peer that reads each request head and, for the first `drops` connections, closes
    without a word (as a server does with a kept-alive connection it displaced just as a
    request came in); after that it sends `answer`. Yields its URL and the count of
    connections it took."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    taken: list[int] = [0]
    stopping = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if stopping.is_set():
                conn.close()
                return
            taken[0] += 1
            with conn:
                received = b""
                while b"\r\n\r\n" not in received and (chunk := conn.recv(65536)):
                    received += chunk
                if taken[0] > drops:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", taken
    finally:
        stopping.set()
        socket.create_connection(listener.getsockname(), timeout=5).close()  # wake accept()
        thread.join(30)
        listener.close()


def test_a_connection_dropped_before_any_answer_is_tried_once_more_on_a_fresh_one() -> None:
    body = b"w" * 1000
    with dropping_peer(1, head(len(body), "Connection: close") + body) as (url, taken):
        assert b"".join(PeerClient("b", url, "t").blob(SHA)) == body
    assert taken == [2]


def test_a_peer_that_keeps_dropping_is_unreachable_after_the_second_try() -> None:
    with dropping_peer(10, b"") as (url, taken), pytest.raises(PeerUnreachable):
        PeerClient("b", url, "t").blob(SHA)
    assert taken == [2]


def test_a_busy_answer_is_busy_and_left_to_the_route() -> None:
    """A 503 with Retry-After (the server's connection cap, or `max_uploads`) is `PeerBusy`:
    the route asks again later and keeps the peer; the client does not retry it itself."""
    busy = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
    with dropping_peer(0, busy) as (url, taken), pytest.raises(PeerBusy):
        PeerClient("b", url, "t").blob(SHA)
    assert taken == [1]
