"""Bounded HTTP serving for every server we run: the pods' reload endpoint, the agent's
/metrics, the studio example.

The stdlib's threaded server gives each connection a thread for as long as it lasts and
times out each read, not the request: a client sending one header byte every few seconds
keeps its thread, and a few dozen such clients keep every slot. Here one selector thread
reads every connection without blocking and writes every answer; only a complete request
(head and body in memory) gets a thread, to run the handler. So a slow or idle client
costs a socket and a small buffer, never a thread, and:

- a request arrives whole in time or not at all: its head within `header_timeout`, its
  body within `request_timeout`, both counted from when the server began waiting for it
  (the accept, or the end of the previous answer) however often bytes trickle in; past
  them a 408 if anything came, else a silent close (an idle keep-alive connection);
- an answer is taken by the client within `write_timeout`, then the connection closes
  or waits for the next request;
- at most `max_connections` at once: a newcomer beyond them displaces the connection that
  has waited longest for its request to complete, so clients that never finish a request
  cannot keep a whole one out (a 503 only if every connection is being answered or came
  in the same burst of accepts as the newcomer);
- a head of at most `max_head` bytes (414/431 beyond, and the stdlib's 431 past 100
  header lines); a body only with one Content-Length of ASCII digits (RFC 9110 `1*DIGIT`,
  400 otherwise) of at most `max_body` bytes (413), never chunked (411); every refusal
  answered with a one-line JSON reason;
- an answer may be a head plus a region of an open file (`FileRegion`), which the
  selector thread sends with os.sendfile as the client takes it: never read into memory,
  so a 64 MiB body costs a descriptor, not 64 MiB. Its deadline scales with its length
  (`write_timeout + length / min_file_rate`), an optional `max_file_rate` (bytes/s) is
  shared by every file body at once (time held back by it is not held against the
  client), and its owner learns when it ends (`on_close`, with the bytes sent), however
  it ends.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import logging
import os
import re
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.client import HTTPException, parse_headers
from http.server import BaseHTTPRequestHandler
from queue import Empty, SimpleQueue
from typing import Any, Self, cast

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
RETRY_AFTER_S = 1  # what a 503 of the server's own bounds tells the client to wait
HEADER_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0
LINGER_S = 2.0
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024
MIN_FILE_RATE = 1024 * 1024  # bytes/s a file body's deadline allows for, past write_timeout
REFUSING_MAX = 16  # connections over the cap told 503 and closed gently; more are just closed

_READ_CHUNK = 16 * 1024
_HEAD_END = re.compile(rb"\n\r?\n")  # an empty line, as http.client's header reader ends
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit and int() take any script's digits
_OWS = " \t"  # the whitespace RFC 9110 allows around a field value
_LONGEST_LENGTH = 18  # digits: more is over any cap, and int() of 5,000 digits refuses
_OVER_ANY_CAP: int = 10**_LONGEST_LENGTH
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SENDFILE_CHUNK = 4 * 1024 * 1024  # per call: bounds how long one disk read holds the loop
_RATE_BURST_S = 0.05  # the shared file rate's bucket holds this many seconds of it
_MIN_BURST = 64 * 1024


def parse_content_length(value: str) -> int:
    """A Content-Length value as RFC 9110 has it (`1*DIGIT`, ASCII, optional whitespace
    around it): its length in bytes, or ValueError. `+10`, `1_0`, `0x10` and
    non-ASCII digits are not."""
    digits = value.strip(_OWS)
    if _DIGITS.fullmatch(digits) is None:
        raise ValueError(f"bad Content-Length {value[:40]!r}: not a decimal number")
    significant = digits.lstrip("0")
    if len(significant) > _LONGEST_LENGTH:
        return _OVER_ANY_CAP  # the exact figure does not matter
    return int(significant or "0")


@dataclass(frozen=True)
class Framing:
    """Where a request's body ends, or the 4xx refusing how it says so."""

    length: int = 0
    declared: bool = False  # a Content-Length was sent (a body-taking route needs one)
    refusal: tuple[int, str] | None = None
    continue_first: bool = False  # `Expect: 100-continue`: the client waits for a 100


def framing_of(headers: Message, max_body: int) -> Framing:
    """The body's length from the headers, as the front end and the handler both take it."""
    if headers.get_all("Transfer-Encoding"):
        return Framing(refusal=(411, "send a Content-Length, not chunks"))
    values = headers.get_all("Content-Length") or []
    if not values:
        return Framing()
    if len(values) > 1:
        return Framing(refusal=(400, "more than one Content-Length"))
    try:
        length = parse_content_length(values[0])
    except ValueError as error:
        return Framing(refusal=(400, str(error)))
    if length > max_body:
        return Framing(refusal=(413, f"body over {max_body} bytes"))
    expect = str(headers.get("Expect", "")).strip(_OWS).lower()
    return Framing(length, declared=True, continue_first=expect == "100-continue")


def _framing_of_head(head: bytes, max_body: int) -> Framing:
    _, _, fields = head.partition(b"\n")
    try:
        headers = parse_headers(io.BytesIO(fields))
    except HTTPException:  # over 100 lines or a line over 64 KiB
        return Framing(refusal=(431, "too many header lines, or one too long"))
    return framing_of(headers, max_body)


def json_answer(status: int, reason: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with a one-line JSON reason."""
    body = json.dumps({"ok": False, "reason": reason}).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass(eq=False)
class FileRegion:
    """`length` bytes of the open file `fd` from `offset`: an answer's body, sent by the
    server with os.sendfile. The server owns `fd` from the moment the handler returns: it
    closes it and calls `on_close(bytes sent)` exactly once, however the answer ends (sent,
    the client gone or too slow, the file shorter than promised, the server stopping)."""

    fd: int
    offset: int
    length: int
    on_close: Callable[[int], None] | None = None
    sent: int = 0
    _closed: bool = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.on_close is not None:
            try:
                self.on_close(self.sent)
            except Exception:
                log.exception("a file body's on_close failed")


@dataclass
class Request:
    """One whole request as a handler gets it; the handler writes its answer to `answer`."""

    data: bytes
    framing: Framing
    answer: io.BytesIO = field(default_factory=io.BytesIO)
    keep_open: bool = False
    region: FileRegion | None = None  # the body, when it comes from a file after `answer`


class _State(enum.Enum):
    READING = "reading"  # waiting for a request, or receiving one: may be displaced
    WORKING = "working"  # a handler thread has its request
    WRITING = "writing"  # its answer is going out
    LINGERING = "lingering"  # answered and half-closed: what the client still sends is dropped


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    address: Any
    since: float  # when the current state began: the request's deadlines count from it
    burst: int  # which round of accepts took it in
    state: _State = _State.READING
    buffer: bytearray = field(default_factory=bytearray)
    scanned: int = 0  # how much of `buffer` was searched for the end of the head
    head_end: int = 0  # 0 until the head is complete
    framing: Framing = Framing()
    answer: bytes = b""
    sent: int = 0
    region: FileRegion | None = None  # sent after `answer`
    file_length: int = 0  # the length of the answer's file body: its deadline grows with it
    held_back: float = 0.0  # seconds the shared file rate kept this answer waiting
    resume_at: float = 0.0  # when a held-back answer may send again (0: not held back)
    paused_since: float = 0.0
    keep_open: bool = False
    events: int = 0  # what the selector watches for
    over_cap: bool = False  # admitted only to be told 503: not one of `max_connections`
    closed: bool = False


def lower_thread_priority(by: int) -> None:
    """Raise the calling thread's nice value by `by` (Linux schedules threads by it), so
    what it serves yields the CPU to the process's other work; where that is not allowed,
    it runs as it is."""
    if by <= 0:
        return
    with contextlib.suppress(OSError):
        thread = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, now + by))


def _family(host: str) -> socket.AddressFamily:
    info = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return info[0][0]


class BoundedHTTPServer(socketserver.TCPServer):
    """`serve_forever()` (or `start()`/`stop()` on a daemon thread) with the bounds above."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BoundedHandler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
        write_timeout: float = WRITE_TIMEOUT_S,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
        min_file_rate: float = MIN_FILE_RATE,
        max_file_rate: float | None = None,
        thread_nice: int = 0,
    ) -> None:
        if min_file_rate <= 0 or (max_file_rate is not None and max_file_rate <= 0):
            raise ValueError("file rates must be positive")
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.request_timeout = max(request_timeout, header_timeout)
        self.write_timeout = write_timeout
        self.max_head = max_head
        self.max_body = max_body
        self.min_file_rate = min_file_rate
        self.max_file_rate = max_file_rate
        self.thread_nice = thread_nice
        self.answer_headers: dict[str, str] = {}  # also on the server's own refusals
        self._allowance = 0.0  # bytes the shared file rate lets out now
        self._allowed_at = time.monotonic()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._connections: set[_Connection] = set()
        self._refusing = 0  # connections over the cap being told 503
        self._bursts = 0  # rounds of accepts so far
        self._answered: SimpleQueue[tuple[_Connection, Request]] = SimpleQueue()
        self._handing_over = threading.Lock()  # an answer queued, or closed if the server is
        self._closing = False
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._serving: threading.Thread | None = None
        self._handler = handler
        self.address_family = _family(address[0])
        super().__init__(address, handler)
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.setblocking(False)

    @property
    def server_port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> Self:
        """Serve on a daemon thread."""
        self._serving = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._serving.start()
        return self

    def stop(self) -> None:
        if self._serving is not None:
            self.shutdown()
            self._serving.join()
            self._serving = None
        self.server_close()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        lower_thread_priority(self.thread_nice)  # the request threads inherit it
        self._stopped.clear()
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                self._step(poll_interval)
        finally:
            self._selector.unregister(self.socket)
            self._selector.unregister(self._wake_r)
            self._stop.clear()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` and wait for it (from another thread, as the stdlib's)."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        with self._handing_over:
            self._closing = True
        for conn in list(self._connections):
            self._close(conn)
        self._take_answers()  # answers nobody will send: their files closed
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # The selector thread: everything below runs on it, except `_work`.

    def _step(self, poll_interval: float) -> None:
        wait = min(poll_interval, max(0.0, self._next_deadline() - time.monotonic()))
        for key, events in self._selector.select(wait):
            if key.fileobj is self.socket:
                self._accept()
            elif key.fileobj is self._wake_r:
                self._drain_wakeups()
            elif not key.data.closed:
                if events & selectors.EVENT_READ:
                    self._on_readable(key.data)
                if events & selectors.EVENT_WRITE and not key.data.closed:
                    self._on_writable(key.data)
        self._take_answers()
        now = time.monotonic()
        self._resume_held_back(now)
        self._expire(now)

    def _accept(self) -> None:
        self._bursts += 1
        for _ in range(self.max_connections):  # then reads get their turn
            try:
                sock, address = self.socket.accept()
            except OSError:  # none left (BlockingIOError), or out of descriptors
                return
            admitted = len(self._connections) - self._refusing
            if admitted < self.max_connections or self._displace_one():
                conn = self._add(sock, address)
                self._watch(conn, selectors.EVENT_READ)
                self._on_readable(conn)  # a request sent with the connect is taken at once
            elif self._refusing < REFUSING_MAX:  # told so, then closed without a reset
                conn = self._add(sock, address)
                conn.over_cap = True
                self._refusing += 1
                self._answer(conn, self._refusal(503, "too many connections: retry soon"))
            else:
                _say_and_close(sock, self._refusal(503, "too many connections: retry soon"))

    def _refusal(self, status: int, reason: str) -> bytes:
        headers = dict(self.answer_headers)
        if status == 503:  # every 503 of ours is a bound reached for now: "try again soon"
            headers["Retry-After"] = str(RETRY_AFTER_S)
        return json_answer(status, reason, headers)

    def _add(self, sock: socket.socket, address: Any) -> _Connection:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(sock, address, since=time.monotonic(), burst=self._bursts)
        self._connections.add(conn)
        return conn

    def _displace_one(self) -> bool:
        """Close the connection that has waited longest for a request (a finished one
        first): it has had its chance; a newcomer may be the call that matters. One
        accepted in this same burst has not had its chance to be read yet, so a burst of
        newcomers cannot push out a call that came in just before them."""
        admitted = [c for c in self._connections if not c.over_cap]
        lingering = [c for c in admitted if c.state is _State.LINGERING]
        waiting = [c for c in admitted if c.state is _State.READING and c.burst != self._bursts]
        if lingering:
            self._close(lingering[0])
            return True
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.since)
        if oldest.buffer:
            reason = "too many connections: this one had waited longest for its request"
            _say(oldest.sock, self._refusal(503, reason))
        self._close(oldest)
        return True

    def _on_readable(self, conn: _Connection) -> None:
        try:
            chunk = conn.sock.recv(_READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)  # the client is gone (or, lingering, done)
        elif conn.state is _State.READING:
            conn.buffer += chunk
            self._advance(conn)

    def _advance(self, conn: _Connection) -> None:
        """Dispatch the request in `conn.buffer` once it is whole; refuse one too large."""
        if not conn.head_end:
            found = _HEAD_END.search(conn.buffer, max(0, conn.scanned - 2))
            if found is None or found.end() > self.max_head:
                conn.scanned = len(conn.buffer)
                if len(conn.buffer) > self.max_head:
                    self._refuse_head(conn)
                return
            conn.head_end = found.end()
            conn.framing = _framing_of_head(bytes(conn.buffer[: conn.head_end]), self.max_body)
            if conn.framing.continue_first and len(conn.buffer) == conn.head_end:
                _say(conn.sock, _CONTINUE)
        whole = conn.head_end + conn.framing.length
        if len(conn.buffer) < whole:
            return
        request = Request(bytes(conn.buffer[:whole]), conn.framing)
        del conn.buffer[:whole]
        conn.head_end = conn.scanned = 0
        conn.framing = Framing()
        self._dispatch(conn, request)

    def _refuse_head(self, conn: _Connection) -> None:
        if b"\n" in conn.buffer[: self.max_head]:
            self._answer(conn, self._refusal(431, f"headers over {self.max_head} bytes"))
        else:
            self._answer(conn, self._refusal(414, f"request line over {self.max_head} bytes"))

    def _dispatch(self, conn: _Connection, request: Request) -> None:
        conn.state = _State.WORKING
        self._watch(conn, 0)
        worker = threading.Thread(
            target=self._work, args=(conn, request), name="http-request", daemon=True
        )
        try:
            worker.start()
        except RuntimeError:  # no thread to be had
            self._answer(conn, self._refusal(503, "the server is out of threads: retry soon"))

    def _work(self, conn: _Connection, request: Request) -> None:
        """On a thread of its own: the handler's answer, handed back to the selector."""
        try:
            self._handler(request, conn.address, self)
        except Exception as error:
            log.exception("an HTTP handler failed")
            request.keep_open = False
            if request.region is not None:  # its head is written: it cannot stand
                request.region.close()
                request.region = None
                request.answer = io.BytesIO()
            if not request.answer.getvalue():
                reason = f"the handler failed ({type(error).__name__}): see the server's log"
                request.answer.write(self._refusal(500, reason))
        if request.framing.refusal is not None:
            request.keep_open = False
        with self._handing_over:
            if self._closing:
                if request.region is not None:
                    request.region.close()
                return
            self._answered.put((conn, request))
        self._wake()

    def _take_answers(self) -> None:
        while True:
            try:
                conn, request = self._answered.get_nowait()
            except Empty:
                return
            if conn.closed:
                if request.region is not None:
                    request.region.close()
            else:
                answer = request.answer.getvalue()
                self._answer(conn, answer, keep_open=request.keep_open, region=request.region)

    def _answer(
        self,
        conn: _Connection,
        answer: bytes,
        *,
        keep_open: bool = False,
        region: FileRegion | None = None,
    ) -> None:
        conn.state, conn.since = _State.WRITING, time.monotonic()
        conn.answer, conn.sent, conn.keep_open = answer, 0, keep_open
        conn.region, conn.held_back, conn.resume_at = region, 0.0, 0.0
        conn.file_length = region.length if region is not None else 0
        self._on_writable(conn)

    def _on_writable(self, conn: _Connection) -> None:
        if conn.state is not _State.WRITING or conn.resume_at:
            return
        try:
            if conn.sent < len(conn.answer):
                conn.sent += conn.sock.send(memoryview(conn.answer)[conn.sent :])
            if conn.sent == len(conn.answer) and conn.region is not None:
                self._send_region(conn, conn.region)
        except BlockingIOError:
            pass
        except OSError:
            self._close(conn)
            return
        if conn.closed or conn.resume_at:
            return
        if conn.sent < len(conn.answer) or conn.region is not None:
            self._watch(conn, selectors.EVENT_WRITE)
        elif conn.keep_open:
            conn.state, conn.since, conn.answer = _State.READING, time.monotonic(), b""
            self._watch(conn, selectors.EVENT_READ)
            self._advance(conn)  # a request the client sent behind the last one
        else:
            self._linger(conn)

    def _send_region(self, conn: _Connection, region: FileRegion) -> None:
        """What the socket takes of the file body now, within the shared rate; done, it is
        closed and dropped from the connection."""
        left = region.length - region.sent
        if left > 0:
            count = min(left, _SENDFILE_CHUNK)
            if self.max_file_rate is not None:
                count = self._allowed(conn, count)
                if not count:
                    return
            sent = os.sendfile(conn.sock.fileno(), region.fd, region.offset + region.sent, count)
            if self.max_file_rate is not None:
                self._allowance -= sent
            if sent == 0:
                log.warning("a file body ended %d bytes short: closing the connection", left)
                self._close(conn)
                return
            region.sent += sent
        if region.sent == region.length:
            conn.region = None
            region.close()

    def _allowed(self, conn: _Connection, want: int) -> int:
        """Bytes of `want` the shared file rate lets `conn` send now; none: it waits (not
        watched for writing) until the bucket holds enough, a wait not held against it."""
        rate = self.max_file_rate
        assert rate is not None
        now = time.monotonic()
        burst = max(rate * _RATE_BURST_S, _MIN_BURST)
        self._allowance = min(burst, self._allowance + (now - self._allowed_at) * rate)
        self._allowed_at = now
        enough = min(want, burst / 4)  # not a trickle of tiny sends
        if self._allowance >= enough:
            return min(want, int(self._allowance))
        conn.paused_since = now
        conn.resume_at = now + max((enough - self._allowance) / rate, 0.001)
        self._watch(conn, 0)
        return 0

    def _resume_held_back(self, now: float) -> None:
        for conn in [c for c in self._connections if c.resume_at and c.resume_at <= now]:
            conn.held_back += now - conn.paused_since
            conn.resume_at = 0.0
            self._on_writable(conn)

    def _linger(self, conn: _Connection) -> None:
        """Close after the answer without resetting it: drain what the client still sends
        (a body we refused to read) for a moment, until it closes its side."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state, conn.since = _State.LINGERING, time.monotonic()
        conn.buffer.clear()
        self._watch(conn, selectors.EVENT_READ)

    def _deadline(self, conn: _Connection) -> float:
        match conn.state:
            case _State.READING:
                budget = self.request_timeout if conn.head_end else self.header_timeout
            case _State.WRITING if conn.resume_at:
                return float("inf")  # held back by the shared file rate, not by the client
            case _State.WRITING:
                budget = self.write_timeout + conn.file_length / self.min_file_rate
                budget += conn.held_back
            case _State.LINGERING:
                budget = LINGER_S
            case _State.WORKING:
                return float("inf")
        return conn.since + budget

    def _next_deadline(self) -> float:
        return min(
            (c.resume_at or self._deadline(c) for c in self._connections), default=float("inf")
        )

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._connections if self._deadline(c) <= now]:
            if conn.state is _State.READING and conn.buffer:
                what = "the body" if conn.head_end else "the headers"
                budget = self.request_timeout if conn.head_end else self.header_timeout
                reason = f"{what} did not arrive within {budget:g} s"
                self._answer(conn, self._refusal(408, reason))
            else:  # idle, or a client that does not take its answer
                self._close(conn)

    def _watch(self, conn: _Connection, events: int) -> None:
        if events == conn.events:
            return
        if not conn.events:
            self._selector.register(conn.sock, events, conn)
        elif not events:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._refusing -= conn.over_cap
        if conn.region is not None:
            conn.region.close()
            conn.region = None
        if conn.events:
            self._selector.unregister(conn.sock)
            conn.events = 0
        conn.sock.close()
        self._connections.discard(conn)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already woken (the pipe is full), or closed
            self._wake_w.send(b"\0")

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass


def _say(sock: socket.socket, answer: bytes) -> None:
    """Best effort, without blocking: for a client we are about to drop anyway."""
    try:
        sock.setblocking(False)
        sock.send(answer)
    except OSError:
        pass


def _say_and_close(sock: socket.socket, answer: bytes) -> None:
    _say(sock, answer)
    sock.close()


class BoundedHandler(BaseHTTPRequestHandler):
    """Runs one whole request the server has read; JSON answers; the body by its framing."""

    server: BoundedHTTPServer
    request: Request
    protocol_version = "HTTP/1.1"

    def __init__(self, request: Request, client_address: Any, server: BoundedHTTPServer) -> None:
        super().__init__(cast(Any, request), client_address, server)  # not a socket: the bytes

    def setup(self) -> None:
        self.framing = self.request.framing
        self.rfile = io.BytesIO(self.request.data)
        self.wfile = self.request.answer

    def handle(self) -> None:
        """The stdlib's `handle_one_request`, once, refusing a framing the server refused."""
        self.close_connection = True
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.raw_requestline or not self.parse_request():
            return
        if self.framing.refusal is not None:
            status, reason = self.framing.refusal
            self.send_json(status, {"ok": False, "reason": reason})
            return
        method = getattr(self, f"do_{self.command}", None)
        if method is None:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"no method {self.command[:40]!r}")
            return
        method()
        self.request.keep_open = not self.close_connection

    def finish(self) -> None:
        pass  # nothing to flush or close: the server writes `request.answer` itself

    def handle_expect_100(self) -> bool:
        return True  # the server said 100 Continue when it read the head, if the body waited

    def read_body(self) -> bytes | None:
        """The request body, or None after answering 411 when no Content-Length came."""
        if not self.framing.declared:
            self.send_json(411, {"ok": False, "reason": "a Content-Length header is required"})
            return None
        return self.rfile.read(self.framing.length)

    def send_json(self, status: int, answer: dict[str, Any]) -> None:
        self.send_bytes(status, json.dumps(answer).encode(), "application/json")

    def send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status >= 400 and status != 404:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def send_file(
        self,
        status: int,
        region: FileRegion,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A head now and `region` as the body, which the server sends from the file (and
        closes): the handler hands the descriptor over here, whatever happens next."""
        self.request.region = region
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(region.length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's refusals (400, 414, 431, 501) as one-line JSON too."""
        reason = message or HTTPStatus(code).phrase
        if self.request_version == "HTTP/0.9":  # a line it could not parse: answer with a head
            self.request_version = "HTTP/1.0"
        self.send_json(code, {"ok": False, "reason": reason})
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # the services log through `logging`; per-call access lines would be noise
