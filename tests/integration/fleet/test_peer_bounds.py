"""What a peer may take of a node: at most `max_uploads` bodies at once (a 503 beyond,
counted while a body is being sent, so slow readers hold their slots and nothing more),
each within a deadline that grows with its length, and a 64 MiB piece sent without the
server's memory growing by anything like 64 MiB."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from modelcache.fleet import PIECE_HEADER, PeerBounds, PeerBusy, PeerClient, bearer
from modelcache.fleet.server import SERVING_NICE
from tests.integration.fleet.conftest import MIB, PIECE, Peer, start_peer
from tests.integration.fleet.test_peer_protocol import SOME, get

REPO = Path(__file__).resolve().parents[3]
PROCESS = "tests.integration.fleet.peer_process"


def wait_for(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll `condition` until it holds (a guard against a hang, not a time budget)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit} s: {what}")
        time.sleep(0.02)


@contextmanager
def slow_reader(peer: Peer, sha: str) -> Iterator[socket.socket]:
    """A client that asks for a blob, takes its first bytes and then reads no more."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.settimeout(20)
    try:
        conn.connect(("127.0.0.1", peer.server.server_port))
        auth = bearer(peer.token)
        conn.sendall(f"GET /v1/blobs/{sha} HTTP/1.1\r\nAuthorization: {auth}\r\n\r\n".encode())
        assert conn.recv(1024).startswith(b"HTTP/1.1 200")
        yield conn
    finally:
        conn.close()


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Peer]:
    running = start_peer(tmp_path, PeerBounds(max_uploads=3))
    try:
        yield running
    finally:
        running.server.stop()


def test_slow_readers_hold_only_their_slots_and_max_uploads_holds(capped: Peer) -> None:
    data = os.urandom(32 * MIB)
    sha = capped.put(data)
    client = capped.client()
    with slow_reader(capped, sha), slow_reader(capped, sha) as second:
        wait_for(lambda: capped.server.uploads == 2, "two slow readers hold two uploads")
        whole = hashlib.sha256()
        for chunk in client.blob(sha):
            whole.update(chunk)
        assert whole.hexdigest() == sha, "a third reader is served beside the slow two"
        with slow_reader(capped, sha):
            wait_for(lambda: capped.server.uploads == 3, "three uploads")
            busy = get(capped, f"/v1/pieces/{sha}/0?size={PIECE}")
            assert (busy.status_code, busy.headers["Retry-After"]) == (503, "1")
            assert PIECE_HEADER not in busy.headers, "busy, not pending"
            assert "3 uploads at once" in busy.json()["reason"]
            with pytest.raises(PeerBusy, match="answered 503"):
                client.piece(sha, 0, PIECE)
            assert get(capped, f"/v1/blobs/{SOME}").status_code == 404, "others still answered"
            assert capped.metric("modelcache_peer_requests_total", result="refused") == 2
        second.close()
        wait_for(lambda: capped.server.uploads == 1, "closed readers free their slots")
        assert b"".join(client.piece(sha, 1, PIECE)) == data[PIECE : 2 * PIECE]
    wait_for(lambda: capped.server.uploads == 0, "every slot free")


def test_a_reader_that_stops_reading_loses_its_upload_at_a_deadline_scaled_to_the_length(
    tmp_path: Path,
) -> None:
    """0.5 s + 32 MiB at 64 MiB/s: the slot comes back while the reader still holds its
    connection open, and the bytes it did take are counted."""
    peer = start_peer(tmp_path, PeerBounds(max_uploads=1, write_timeout=0.5, min_rate=64 * MIB))
    try:
        data = os.urandom(32 * MIB)
        sha = peer.put(data)
        with slow_reader(peer, sha):
            wait_for(lambda: peer.server.uploads == 1, "the upload starts")
            wait_for(lambda: peer.server.uploads == 0, "the deadline frees it")
            sent = peer.metric("modelcache_peer_upload_bytes_total")
            assert 0 < sent < 32 * MIB
            assert b"".join(peer.client().blob(sha, 0, 10)) == data[:10], "its slot is free"
    finally:
        peer.server.stop()


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_64_mib_piece_is_served_without_the_server_holding_it_in_memory(
    tmp_path: Path,
) -> None:
    peer = start_peer(tmp_path)  # for its blobs/ and token; the measured server is a process
    peer.server.stop()
    data = os.urandom(64 * MIB + 1)
    sha = peer.put(data)
    small = peer.put(b"warm-up")
    del data
    process = subprocess.Popen(
        [sys.executable, "-m", PROCESS, str(peer.blobs), str(peer.token_file)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        client = PeerClient("measured", f"http://127.0.0.1:{port}", peer.token)
        assert b"".join(client.blob(small)) == b"warm-up"  # the handler's code paths loaded
        before = _peak_rss(process.pid)
        piece = hashlib.sha256()
        with client.piece(sha, 0, 64 * MIB, length=64 * MIB) as body:
            for chunk in body:
                piece.update(chunk)
        assert body.received == 64 * MIB
        with (peer.blobs / "sha256" / sha[:2] / sha).open("rb") as blob:
            assert piece.digest() == hashlib.sha256(blob.read(64 * MIB)).digest()
        grown = _peak_rss(process.pid) - before
        assert grown < 8 * MIB, f"the server's peak memory grew by {grown / MIB:.1f} MiB"
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=30)


def _nice(task: Path) -> int | None:
    try:
        return int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
    except (OSError, IndexError, ValueError):
        return None  # the thread ended meanwhile


def test_serving_runs_below_the_agents_own_work(peer: Peer) -> None:
    """Serving yields the CPU to the node's own pulls, flips and reloads: the server's
    thread (and the request threads it starts) run at a nice value above the process's."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert SERVING_NICE > 0
    assert own + SERVING_NICE <= 19, "the tests themselves run at too low a priority to see it"
    tasks = Path("/proc/self/task")
    wait_for(
        lambda: any(_nice(t) == min(19, own + SERVING_NICE) for t in tasks.iterdir()),
        "the serving thread at a lower priority",
    )
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own
    sha = peer.put(b"w" * 1000)
    assert b"".join(peer.client().blob(sha)) == b"w" * 1000
