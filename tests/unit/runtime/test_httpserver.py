"""The pods' reload server bounds what a request can hold, spoken to over raw sockets as a
hostile client would: each refused framing gets its 4xx, a request must arrive whole in
time however slowly it trickles, and the agent's reload call gets through while slow
clients hold connections (the bounds themselves: tests/unit/serving)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache.agent.reload import call_reload
from modelcache.runtime import LoraRuntime, ReloadServer, ReloadService, RuntimeConfig
from modelcache.store import Store
from tests.unit.runtime.support import MODEL, TinyNet, install_version, make_adapter
from tests.unit.serving.clients import (
    Slowloris,
    dribble_until_cut,
    exchange,
    read_to_close,
    reason_of,
    status_of,
)

NAME = str(MODEL)
CALL = b'{"model": "studio/garment-lora", "version": "v1"}'


@pytest.fixture
def server() -> Iterator[ReloadServer]:
    service = ReloadService([])
    with ReloadServer(
        service,
        host="127.0.0.1",
        port=0,
        max_connections=3,
        header_timeout=1.0,
        request_timeout=2.0,
    ) as running:
        yield running


@pytest.fixture
def pod(model: TinyNet, store: Store, tmp_path: Path) -> Iterator[ReloadServer]:
    """A pod as deployed: v1 installed and `current`, the reload server at its defaults."""
    install_version(store, "v1", make_adapter(1).files(tmp=tmp_path))
    store.flip(MODEL, "v1")
    runtime = LoraRuntime(model, RuntimeConfig(model=NAME, root=store.root))
    with ReloadServer(ReloadService([runtime]), host="127.0.0.1", port=0) as running:
        yield running


def reload_with(length: bytes, body: bytes = CALL) -> bytes:
    head = b"POST /modelcache/reload HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n"
    return head + b"Content-Length: %s\r\n\r\n%s" % (length, body)


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
    answer = exchange(server.port, request)
    assert status_of(answer) == status
    assert reason in reason_of(answer)


N = b"%d" % len(CALL)


@pytest.mark.parametrize(
    "length",
    [b"+" + N, b"\r\n " + N, N[:1] + b"_" + N[1:], b"0x%x" % len(CALL), b"\x0c" + N, N + b"\x0b"],
)
def test_a_content_length_of_anything_but_digits_is_a_400(
    server: ReloadServer, length: bytes
) -> None:
    """`int()` takes each of these as the call's length; RFC 9110 takes digits only."""
    answer = exchange(server.port, reload_with(length))
    assert status_of(answer) == 400
    assert reason_of(answer).startswith("bad Content-Length")


def test_non_ascii_digits_are_a_400(server: ReloadServer) -> None:
    arabic = "".join(chr(0x0660 + int(d)) for d in str(len(CALL))).encode()
    answer = exchange(server.port, reload_with(arabic))
    assert (status_of(answer), reason_of(answer)[:18]) == (400, "bad Content-Length")


def test_a_content_length_of_digits_reaches_the_service(server: ReloadServer) -> None:
    answer = exchange(server.port, reload_with(b"%d" % len(CALL)))
    assert status_of(answer) == 404  # this pod serves no model: the call itself was read
    assert "this pod serves []" in reason_of(answer)


def test_too_many_headers_is_a_431(server: ReloadServer) -> None:
    headers = b"".join(b"X-Pad-%d: x\r\n" % i for i in range(150))
    answer = exchange(server.port, b"GET /modelcache/status HTTP/1.1\r\n" + headers + b"\r\n")
    assert status_of(answer) == 431


def test_an_idle_connection_is_closed(server: ReloadServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        assert conn.recv(1) == b"", "closed by the server, not kept"


def test_a_body_that_never_comes_gets_a_408(server: ReloadServer) -> None:
    answer = exchange(server.port, reload_with(b"1000", b"{"))
    assert (status_of(answer), reason_of(answer)) == (408, "the body did not arrive within 2 s")


def test_a_head_dribbled_a_byte_at_a_time_is_cut_at_its_deadline(server: ReloadServer) -> None:
    """Every read comes 0.3 s after the last, yet the whole head is due in 1 s."""
    said, _ = dribble_until_cut(
        server.port, b"POST /modelcache/reload HTTP/1.1\r\nX-Slow: ", every=0.3, give_up=30
    )
    assert (status_of(said), reason_of(said)) == (408, "the headers did not arrive within 1 s")


def test_at_the_cap_a_newcomer_displaces_the_oldest_waiting_connection(
    server: ReloadServer,
) -> None:
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    held[0].sendall(b"GET /modelcache/status HTTP/1.1\r\nX-Half: ")
    time.sleep(0.1)  # they have been accepted (a burst's own are not displaced)
    try:
        answer = exchange(
            server.port, b"GET /modelcache/status HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        assert status_of(answer) == 200
        assert status_of(read_to_close(held[0])) == 503
    finally:
        for conn in held:
            conn.close()


# At the real defaults.


def test_a_dribbled_head_is_cut_at_the_default_deadline(pod: ReloadServer) -> None:
    """A byte a second, forever: cut after 5 s, where a per-read timeout never fires."""
    said, after = dribble_until_cut(
        pod.port, b"POST /modelcache/reload HTTP/1.1\r\nX-Slow: ", every=1.0, give_up=30
    )
    assert (status_of(said), reason_of(said)) == (408, "the headers did not arrive within 5 s")
    assert after >= 5.0


def test_the_agents_reload_call_gets_through_while_slow_clients_hold_connections(
    pod: ReloadServer,
) -> None:
    """48 connections (more than the old cap of 32) each dribbling a byte every 1-2 s, and
    coming back when cut: the agent's calls, one every half second for longer than the
    header deadline, are all answered."""
    held_during_calls = []
    with Slowloris(pod.port, 48) as crowd:
        started = time.monotonic()
        while time.monotonic() - started < 7.0:
            held_during_calls.append(crowd.open_now())
            answer = call_reload(pod.url(), model=NAME, version="v1", timeout=10)
            assert (answer.status, answer.ok, answer.live_version) == (200, True, "v1")
            time.sleep(0.5)
    assert min(held_during_calls) >= 40
