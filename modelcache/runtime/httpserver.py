"""Bounded stdlib HTTP serving for the pods' endpoints (reload, the studio example).

`ThreadingHTTPServer` as it comes trusts the request's framing: it starts a thread per
connection without limit, keeps an idle connection (and its thread) forever, and a
handler reading `Content-Length` itself can be made to allocate anything or to drop the
connection with no answer. Here: at most `max_connections` at once (503 beyond, with no
thread), `idle_timeout` seconds for a connection to send its request, a body only with
a sane `Content-Length` up to `max_body` bytes, and a 4xx with a one-line JSON reason for
every framing it refuses. The stdlib already bounds the request line and the headers
(414, 431).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_CONNECTIONS = 32
IDLE_TIMEOUT_S = 10.0
MAX_BODY = 64 * 1024
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but at most `max_connections` of them."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT_S,
        max_body: int = MAX_BODY,
    ) -> None:
        super().__init__(address, handler)
        self.idle_timeout = idle_timeout
        self.max_body = max_body
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:  # answered here, on the accepting thread: no thread for it
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class BoundedHandler(BaseHTTPRequestHandler):
    """JSON answers, and a body read only within the server's bounds."""

    server: BoundedHTTPServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # idle or slow clients go

    def read_body(self) -> bytes | None:
        """The request body, or None after answering why it is refused (4xx)."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.send_json(411, {"ok": False, "reason": "send a Content-Length, not chunks"})
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.send_json(411, {"ok": False, "reason": "a Content-Length header is required"})
            return None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.send_json(400, {"ok": False, "reason": f"bad Content-Length {raw[:40]!r}"})
            return None
        if length > self.server.max_body:
            reason = f"body over {self.server.max_body} bytes"
            self.send_json(413, {"ok": False, "reason": reason})
            return None
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            body = b""
        if len(body) < length:  # the client stopped sending: nobody to answer
            self.close_connection = True
            return None
        return body

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

    def log_message(self, format: str, *args: object) -> None:
        pass  # the services log through `logging`; per-call access lines would be noise
