"""Clients as a hostile or careless peer would be, over raw sockets: one raw exchange, and a
crowd of slow clients that dribble a byte every second or two and come back when cut."""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

HEAD_DRIBBLE = b"POST /modelcache/reload HTTP/1.1\r\nHost: pod\r\nX-Slow: "
BODY_DRIBBLE = b"POST /modelcache/reload HTTP/1.1\r\nHost: pod\r\nContent-Length: 60000\r\n\r\n"


def exchange(port: int, request: bytes, *, timeout: float = 30.0) -> bytes:
    """Send one raw request; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        return read_to_close(conn)


def read_to_close(conn: socket.socket) -> bytes:
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def reason_of(answer: bytes) -> str:
    body = answer.partition(b"\r\n\r\n")[2]
    reason = json.loads(body)["reason"]
    assert isinstance(reason, str)
    return reason


def dribble_until_cut(
    port: int, head: bytes, *, every: float, give_up: float
) -> tuple[bytes, float]:
    """Send `head` then filler a byte every `every` seconds, each read well within any
    per-read timeout; what the server said when it cut us, and after how long."""
    with socket.create_connection(("127.0.0.1", port), timeout=give_up) as conn:
        started = time.monotonic()
        conn.sendall(head)
        while time.monotonic() - started < give_up:
            readable, _, _ = select.select([conn], [], [], every)
            if readable:
                return read_to_close(conn), time.monotonic() - started
            try:
                conn.send(b"a")
            except OSError:
                return b"", time.monotonic() - started
    raise AssertionError(f"still connected after dribbling for {give_up} s")


@dataclass
class _Slot:
    prefix: bytes
    sock: socket.socket | None = None
    sent: int = 0
    due: float = 0.0  # when to send the next byte, or to reconnect


@dataclass
class Slowloris:
    """`count` connections, half dribbling a head and half a body (after the whole head at
    once), a byte every 1-2 s each;
    one the server cuts comes back after `comeback` seconds, as an attacker's would."""

    port: int
    count: int
    comeback: float = 0.2
    seed: int = 0
    cuts: int = 0
    refusals: list[bytes] = field(default_factory=list)  # what the server said when it cut
    _slots: list[_Slot] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Slowloris:
        """Connect them over a second, so that their deadlines fall apart as an attacker's
        would, not in one instant."""
        rng = random.Random(self.seed)  # noqa: S311 - timing jitter, not secrets
        for index in range(self.count):
            slot = _Slot(HEAD_DRIBBLE if index % 2 else BODY_DRIBBLE)
            self._connect(slot, time.monotonic(), rng)
            self._slots.append(slot)
            time.sleep(1.0 / self.count)
        self._thread = threading.Thread(target=self._run, args=(rng,), daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for slot in self._slots:
            if slot.sock is not None:
                slot.sock.close()

    def open_now(self) -> int:
        """Slow connections the server has not cut (as far as we have seen)."""
        with self._lock:
            return sum(slot.sock is not None for slot in self._slots)

    def _connect(self, slot: _Slot, now: float, rng: random.Random) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            slot.due = now + self.comeback
            return
        sock.setblocking(False)
        slot.sock, slot.sent = sock, 0
        slot.due = now + rng.uniform(1.0, 2.0)
        if slot.prefix is BODY_DRIBBLE:  # the head at once, then the body a byte at a time
            self._send(slot, BODY_DRIBBLE)
        else:
            self._send(slot, slot.prefix[:1])

    def _send_byte(self, slot: _Slot) -> None:
        self._send(slot, slot.prefix[slot.sent : slot.sent + 1] or b"a")

    def _send(self, slot: _Slot, data: bytes) -> None:
        assert slot.sock is not None
        try:
            slot.sock.sendall(data)
        except OSError:
            self._cut(slot, b"")
            return
        slot.sent += len(data)

    def _cut(self, slot: _Slot, said: bytes) -> None:
        assert slot.sock is not None
        with self._lock:
            slot.sock.close()
            slot.sock = None
        self.cuts += 1
        if said:
            self.refusals.append(said)
        slot.due = time.monotonic() + self.comeback

    def _run(self, rng: random.Random) -> None:
        while not self._stop.is_set():
            socks = {slot.sock: slot for slot in self._slots if slot.sock is not None}
            readable, _, _ = select.select(list(socks), [], [], 0.05) if socks else ([], [], [])
            for sock in readable:
                try:
                    said = sock.recv(4096)
                except OSError:
                    said = b""
                self._cut(socks[sock], said)
            now = time.monotonic()
            for slot in self._slots:
                if now < slot.due:
                    continue
                if slot.sock is None:
                    self._connect(slot, now, rng)
                else:
                    slot.due = now + rng.uniform(1.0, 2.0)
                    self._send_byte(slot)
            if not socks:
                time.sleep(0.05)
