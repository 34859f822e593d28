"""The bounded server as clients reach it, over real sockets on 127.0.0.1: framing by a
Content-Length of digits only, a whole request within its deadlines however slowly it
trickles, displacement at the connection cap, keep-alive, and a one-line JSON answer for
everything it refuses."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modelcache.serving import (
    BoundedHandler,
    BoundedHTTPServer,
    parse_content_length,
)
from tests.unit.serving.clients import (
    dribble_until_cut,
    exchange,
    read_to_close,
    reason_of,
    status_of,
)

CAP = 1000  # bytes of body the test servers take
GET_CLOSE = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"


class _Echo(BoundedHandler):
    """POST /echo answers the body it got; POST /boom fails; POST /hold waits for `release`."""

    server: _EchoServer

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/boom":
            raise RuntimeError("a bug in a handler")
        body = self.read_body()
        if body is None:
            return
        if self.path == "/hold":
            self.server.holding.release()
            self.server.release.wait(30)
        self.send_bytes(200, body, "application/octet-stream")

    def do_GET(self) -> None:  # noqa: N802
        self.send_json(200, {"ok": True, "path": self.path})


class _EchoServer(BoundedHTTPServer):
    def __init__(self, **bounds: float) -> None:
        super().__init__(("127.0.0.1", 0), _Echo, max_body=CAP, **bounds)  # type: ignore[arg-type]
        self.holding = threading.Semaphore(0)
        self.release = threading.Event()


def _serve(**bounds: float) -> Iterator[_EchoServer]:
    server = _EchoServer(**bounds).start()
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    yield from _serve(header_timeout=1.0, request_timeout=2.0, max_connections=4)


def post(length: bytes, body: bytes, path: bytes = b"/echo", *, close: bool = True) -> bytes:
    """A raw POST with `length` as its Content-Length value, exactly as given."""
    connection = b"close" if close else b"keep-alive"
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nConnection: %s\r\n" % (path, connection)
    return head + b"Content-Length: %s\r\n\r\n%s" % (length, body)


# Content-Length: digits only (RFC 9110 1*DIGIT).


@pytest.mark.parametrize(
    "raw",
    [
        b"+10",
        b"-10",
        b"1_0",
        b"0x10",
        b"1e1",
        b"10.0",
        "\u0661\u0660".encode(),  # Arabic-Indic 10: int() takes it
        "\uff11\uff10".encode(),  # fullwidth 10
        b"\r\n 10",  # folded: the value the parser holds starts with a space
        b"\x0c10",  # whitespace int() strips but a field value cannot hold
        b"\xa010",  # Latin-1 no-break space, likewise
        b"10\x0b",
        b"1 0",
        b"",
    ],
)
def test_a_content_length_that_is_not_digits_is_a_400(echo: _EchoServer, raw: bytes) -> None:
    answer = exchange(echo.server_port, post(raw, b"0123456789"))
    assert status_of(answer) == 400, answer[:200]
    assert "bad Content-Length" in reason_of(answer)


@pytest.mark.parametrize("raw", [b"10", b"010", b" 10 ", b"\t10"])
def test_digits_frame_the_body(echo: _EchoServer, raw: bytes) -> None:
    """Whitespace around a field value is not part of it (RFC 9110 5.5): ` 10 ` is 10."""
    answer = exchange(echo.server_port, post(raw, b"0123456789", close=False) + GET_CLOSE)
    first, _, rest = answer.partition(b"0123456789")
    assert status_of(first) == 200
    assert status_of(rest) == 200, "the next request starts right after the 10 bytes"


def test_two_content_lengths_are_a_400(echo: _EchoServer) -> None:
    request = b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 12\r\n\r\nab"
    answer = exchange(echo.server_port, request)
    assert (status_of(answer), reason_of(answer)) == (400, "more than one Content-Length")


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        (b"Content-Length: 1001\r\n", 413, "body over 1000 bytes"),
        (b"Content-Length: 99999999999999999999999999999\r\n", 413, "body over"),
        (b"Transfer-Encoding: chunked\r\n", 411, "not chunks"),
        (b"", 411, "Content-Length header is required"),
    ],
)
def test_refused_framing_gets_its_4xx(
    echo: _EchoServer, headers: bytes, status: int, reason: str
) -> None:
    answer = exchange(echo.server_port, b"POST /echo HTTP/1.1\r\n" + headers + b"\r\n")
    assert status_of(answer) == status
    assert reason in reason_of(answer)


@given(
    raw=st.text(
        alphabet=st.sampled_from("0123456789+-_ xabe.\x0b\x0c\u0661\u0660\uff11\xb2"), max_size=8
    )
)
@example(raw="1000")
@example(raw="1001")
@example(raw="0")
@settings(max_examples=150, deadline=None)
def test_a_content_length_is_taken_iff_it_is_ascii_digits_within_the_cap(raw: str) -> None:
    """Over the wire: 200 with the body iff the value is 1+ ASCII digits within the cap, 413
    past the cap, 400 for anything else."""
    value = raw.strip(" \t")  # the whitespace around any field value
    digits = value.isascii() and value.isdigit()
    length = int(value) if digits else 0
    body = b"x" * length if length <= CAP else b""
    with _EchoServer(header_timeout=5.0, request_timeout=5.0).start() as server:
        answer = exchange(server.server_port, post(raw.encode(), body))
    if digits and length <= CAP:
        assert (status_of(answer), answer.endswith(b"\r\n\r\n" + body)) == (200, True)
    elif digits:
        assert status_of(answer) == 413
    else:
        assert status_of(answer) == 400


@given(raw=st.text(max_size=30))
@example(raw="+10")
@example(raw="1_0")
@example(raw=" 10")
@example(raw="\u0661\u0660")
@example(raw="9" * 5000)
def test_parse_content_length_takes_ascii_digits_only(raw: str) -> None:
    value = raw.strip(" \t")
    if value and value.isascii() and value.isdigit():
        huge = len(value.lstrip("0")) > 18  # over any cap: int() of 5,000 digits refuses
        assert parse_content_length(raw) == (10**18 if huge else int(value))
    else:
        with pytest.raises(ValueError, match="bad Content-Length"):
            parse_content_length(raw)


# A whole request within its deadlines.


def test_headers_dribbled_forever_are_cut_at_the_header_deadline(echo: _EchoServer) -> None:
    """A byte every 0.2 s: no read ever waits long, yet the request is cut at 1 s."""
    said, _ = dribble_until_cut(
        echo.server_port, b"GET / HTTP/1.1\r\nX-Slow: ", every=0.2, give_up=20
    )
    assert status_of(said) == 408
    assert reason_of(said) == "the headers did not arrive within 1 s"


def test_a_body_dribbled_past_the_deadline_is_cut(echo: _EchoServer) -> None:
    said, _ = dribble_until_cut(echo.server_port, post(b"1000", b""), every=0.2, give_up=20)
    assert status_of(said) == 408
    assert reason_of(said) == "the body did not arrive within 2 s"


def test_an_idle_connection_is_closed_without_a_word(echo: _EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", echo.server_port), timeout=20) as conn:
        assert conn.recv(1) == b""


def test_a_keep_alive_connection_serves_request_after_request(echo: _EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", echo.server_port), timeout=20) as conn:
        for n in range(5):
            body = b"%d" % n * 7
            conn.sendall(post(b"%d" % len(body), body, close=False))
            answer = b""
            while not answer.endswith(body):
                answer += conn.recv(65536)
            assert status_of(answer) == 200


# The connection cap.


def test_at_the_cap_a_newcomer_displaces_the_oldest_waiting_connection(
    echo: _EchoServer,
) -> None:
    held = [socket.create_connection(("127.0.0.1", echo.server_port), timeout=20)]
    held[0].sendall(b"GET / HTTP/1.1\r\nX-Half: ")  # the oldest, half a request in
    held += [socket.create_connection(("127.0.0.1", echo.server_port)) for _ in range(3)]
    time.sleep(0.1)  # they have been accepted (a burst's own are not displaced)
    try:
        answer = exchange(echo.server_port, post(b"2", b"ok"))
        assert status_of(answer) == 200
        said = read_to_close(held[0])
        assert status_of(said) == 503
        assert "waited longest" in reason_of(said)
    finally:
        for conn in held:
            conn.close()


def test_a_503_only_when_every_connection_is_being_answered() -> None:
    for server in _serve(max_connections=2):
        busy = [socket.create_connection(("127.0.0.1", server.server_port)) for _ in range(2)]
        for conn in busy:
            conn.sendall(post(b"1", b"x", b"/hold", close=False))
            assert server.holding.acquire(timeout=20)
        answer = exchange(server.server_port, GET_CLOSE)
        assert (status_of(answer), reason_of(answer)) == (503, "too many connections: retry soon")
        assert b"\r\nRetry-After: 1\r\n" in answer  # a bound for now: clients come back
        server.release.set()
        for conn in busy:
            answer = b""
            while not answer.endswith(b"\r\n\r\nx"):
                answer += conn.recv(65536)
            assert status_of(answer) == 200
            conn.close()


# Answers.


def test_a_refused_body_still_gets_its_answer_not_a_reset(echo: _EchoServer) -> None:
    """A 413 before the body is read: the client sending it must still read the 413."""
    with socket.create_connection(("127.0.0.1", echo.server_port), timeout=20) as conn:
        conn.sendall(post(b"300000", b"x" * 300000))
        answer = read_to_close(conn)
    assert status_of(answer) == 413


def test_a_failing_handler_answers_500_in_one_line(echo: _EchoServer) -> None:
    answer = exchange(echo.server_port, post(b"2", b"{}", b"/boom"))
    assert status_of(answer) == 500
    assert reason_of(answer) == "the handler failed (RuntimeError): see the server's log"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: x\r\n" % i for i in range(150)) + b"\r\n", 431),
        (b"BREW / HTTP/1.1\r\n\r\n", 501),
        (b"GET / HTTP/9\r\n\r\n", 400),
    ],
)
def test_heads_it_refuses_get_a_json_reason(
    echo: _EchoServer, request_bytes: bytes, status: int
) -> None:
    answer = exchange(echo.server_port, request_bytes)
    assert status_of(answer) == status
    assert reason_of(answer)


def test_expect_100_continue_gets_its_100_then_the_answer(echo: _EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", echo.server_port), timeout=20) as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert conn.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(b"hello")
        answer = b""
        while not answer.endswith(b"hello"):
            answer += conn.recv(65536)
    assert status_of(answer) == 200


HEAD_LINES = [
    b"GET / HTTP/1.1",
    b"POST /echo HTTP/1.1",
    b"Content-Length: 3",
    b"Expect: 100-continue",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"X: \xff\x00",
    b"",
    b"\r",
]


@given(
    head=st.binary(max_size=200)
    | st.lists(st.sampled_from(HEAD_LINES), max_size=6).map(b"\r\n".join)
)
@settings(max_examples=60, deadline=None)
def test_whatever_a_client_sends_the_server_answers_and_stays_up(head: bytes) -> None:
    """Hostile bytes get a status line, a JSON line (HTTP/0.9) or a close; never a crash."""
    with _EchoServer(header_timeout=0.3, request_timeout=0.6).start() as server:
        answer = exchange(server.server_port, head + b"\r\n\r\nabc")
        assert answer == b"" or answer.startswith((b"HTTP/1.", b"{")), answer[:80]
        assert status_of(exchange(server.server_port, GET_CLOSE)) == 200
