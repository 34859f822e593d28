"""The peer server: what this node holds, served to the other nodes of its fleet.

GET only, behind a bearer token, on the bounded server (connections, head size and time
bounded as for every server we run); bodies go out of the file with sendfile, never
through memory. Routes:

- `/v1/blobs/<sha256>`: a complete blob, whole (200) or one `Range` (206; 416 past its end);
- `/v1/pieces/<sha256>/<index>?size=<piece size>`: one piece of a blob cut in `size`-byte
  pieces, from a complete blob or a verified piece of one being downloaded; 503
  (`X-Modelcache-Piece: pending`, `Retry-After: 1`) while that piece is not verified yet,
  404 (`X-Modelcache-Piece: absent`) when this node has neither.

Only a file the locator or the in-flight registry names is opened, and only a regular one
reached without following a symlink at its last step: the digest in the path must be 64
lowercase hex before anything is looked up, so no path leaves blobs/.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from modelcache.fleet.holdings import BlobLocator, InFlight
from modelcache.fleet.ranges import BadRange, Unsatisfiable, parse_range
from modelcache.serving import (
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    MIN_FILE_RATE,
    WRITE_TIMEOUT_S,
    BoundedHandler,
    BoundedHTTPServer,
    FileRegion,
)

log = logging.getLogger(__name__)

NODE_HEADER = "X-Modelcache-Node"
VERIFIED_HEADER = "X-Modelcache-Verified"
PIECE_HEADER = "X-Modelcache-Piece"
MAX_UPLOADS = 4
# The serving threads' nice value above the agent's: peers get what the node's own pulls,
# flips and reloads leave of the CPU (docs/fanout.md, "Serving costs").
SERVING_NICE = 10
MIN_PIECE_SIZE = 4 * 1024  # a piece size asked for is a power of two in this range
MAX_PIECE_SIZE = 64 * 1024 * 1024
RESULTS = ("served", "absent", "pending", "refused", "unauthorized", "bad_request")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_BLOB = re.compile(r"/v1/blobs/([^/]*)")
_PIECE = re.compile(r"/v1/pieces/([^/]*)/([^/]*)")
_INDEX = re.compile(r"[0-9]{1,9}")
_SIZE_QUERY = re.compile(r"size=([0-9]{1,9})")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class TokenChecker(Protocol):
    """What the server asks of the credential (auth.TokenFile is one)."""

    def check(self, header_value: str) -> bool: ...


@dataclass(frozen=True)
class PeerBounds:
    """How much of this node its peers may take at once."""

    max_uploads: int = MAX_UPLOADS  # bodies being sent at once; a 503 beyond
    max_rate: float | None = None  # bytes/s, shared by every body being sent
    min_rate: float = MIN_FILE_RATE  # a body's deadline: write_timeout + length / min_rate
    max_connections: int = MAX_CONNECTIONS
    header_timeout: float = HEADER_TIMEOUT_S
    write_timeout: float = WRITE_TIMEOUT_S


def open_regular(path: Path) -> tuple[int, int] | None:
    """(descriptor, size) of the regular file at `path`, opened without following a
    symlink there; None when there is none (a symlink, a special file or one this process
    may not read is logged: a peer is told it is absent and goes elsewhere)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            log.warning("peer server: %s is a symlink, not served", path)
        else:
            log.warning("peer server: %s cannot be opened (%s), not served", path, error)
        return None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        log.warning("peer server: %s is not a regular file, not served", path)
        return None
    return fd, status.st_size


class _PeerHandler(BoundedHandler):
    server: PeerServer

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        self.send_header(NODE_HEADER, self.server.node)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.server.count("bad_request")
        super().send_error(code, message, explain)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not self._authorized():
            return
        path, _, query = self.path.partition("?")
        if found := _BLOB.fullmatch(path):
            self._blob(found[1], query)
        elif found := _PIECE.fullmatch(path):
            self._piece(found[1], found[2], query)
        else:
            self._refuse(404, "bad_request", f"no {path[:80]!r}: /v1/blobs/ or /v1/pieces/")

    def _not_allowed(self) -> None:
        if self._authorized():
            self._refuse(405, "bad_request", f"{self.command} is not served: GET only")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

    def _authorized(self) -> bool:
        presented = self.headers.get("Authorization")
        if presented is None:
            self._refuse(401, "unauthorized", "no peer credential: Authorization: Bearer <token>")
            return False
        if not self.server.tokens.check(presented):
            self._refuse(403, "unauthorized", "the peer credential is not this fleet's (now)")
            return False
        return True

    def _blob(self, sha256: str, query: str) -> None:
        if not self._is_digest(sha256):
            return
        if query:
            self._refuse(400, "bad_request", "/v1/blobs/ takes no query")
            return
        opened = self._open_complete(sha256)
        if opened is None:
            self._refuse(404, "absent", f"blob {sha256} is not held here")
            return
        fd, size = opened
        try:
            wanted = self.headers.get("Range")
            ranged = parse_range(wanted, size) if wanted is not None else None
        except (BadRange, Unsatisfiable) as error:
            os.close(fd)
            if isinstance(error, BadRange):
                self._refuse(400, "bad_request", str(error))
            else:
                headers = {"Content-Range": f"bytes */{size}"}
                self._refuse(416, "bad_request", str(error), headers)
            return
        headers = {"Accept-Ranges": "bytes"}
        if ranged is None:
            self._send_body(200, fd, 0, size, headers)
        else:
            headers["Content-Range"] = f"bytes {ranged.start}-{ranged.last}/{size}"
            self._send_body(206, fd, ranged.start, ranged.length, headers)

    def _piece(self, sha256: str, raw_index: str, query: str) -> None:
        if not self._is_digest(sha256):
            return
        sized = _SIZE_QUERY.fullmatch(query)
        if _INDEX.fullmatch(raw_index) is None or sized is None:
            self._refuse(400, "bad_request", "a piece is /v1/pieces/<sha256>/<index>?size=<n>")
            return
        index, size = int(raw_index), int(sized[1])
        if size & (size - 1) or not MIN_PIECE_SIZE <= size <= MAX_PIECE_SIZE:
            reason = f"a piece size is a power of two in [{MIN_PIECE_SIZE}, {MAX_PIECE_SIZE}]"
            self._refuse(400, "bad_request", reason)
            return
        opened = self._open_complete(sha256)
        if opened is None:
            opened = self._open_in_flight(sha256, index, size)
            if opened is None:
                return  # answered
        fd, blob_size = opened
        start = index * size
        if start >= blob_size and (index, blob_size) != (0, 0):
            os.close(fd)
            count = max(1, -(-blob_size // size))
            self._refuse(416, "bad_request", f"blob {sha256} has {count} pieces of {size}")
            return
        length = min(size, blob_size - start)
        self._send_body(200, fd, start, length, {PIECE_HEADER: "served"})

    def _open_in_flight(self, sha256: str, index: int, size: int) -> tuple[int, int] | None:
        """The blob being downloaded, when piece `index` of it is verified; else answered."""
        absent = {PIECE_HEADER: "absent"}
        holding = self.server.in_flight.lookup(sha256)
        if holding is None or holding.piece_size != size:
            self._refuse(404, "absent", f"blob {sha256} is not held here", absent)
            return None
        count = max(1, -(-holding.size // size))
        if index >= count:
            self._refuse(416, "bad_request", f"blob {sha256} has {count} pieces of {size}")
            return None
        if index not in holding.verified:
            # How many pieces are verified so far: a waiting peer sees the download move.
            verified = str(len(holding.verified))
            pending = {PIECE_HEADER: "pending", "Retry-After": "1", VERIFIED_HEADER: verified}
            self._refuse(503, "pending", f"piece {index} is not verified yet", pending)
            return None
        opened = open_regular(holding.path)
        if opened is None:  # its download ended in between: complete now, or given up
            opened = self._open_complete(sha256)
        if opened is None:
            self._refuse(404, "absent", f"blob {sha256} is not held here", absent)
            return None
        return opened[0], holding.size

    def _open_complete(self, sha256: str) -> tuple[int, int] | None:
        path = self.server.locate(sha256)
        return None if path is None else open_regular(path)

    def _send_body(
        self, status: int, fd: int, offset: int, length: int, headers: dict[str, str]
    ) -> None:
        if not self.server.take_upload():
            os.close(fd)
            reason = f"{self.server.bounds.max_uploads} uploads at once already: retry soon"
            self._refuse(503, "refused", reason, {"Retry-After": "1"})
            return
        region = FileRegion(fd, offset, length, on_close=self.server.upload_done)
        self.server.count("served")
        self.send_file(status, region, "application/octet-stream", headers)

    def _is_digest(self, sha256: str) -> bool:
        if _SHA256.fullmatch(sha256) is None:
            self._refuse(400, "bad_request", f"{sha256[:80]!r} is not a sha256 (64 lowercase hex)")
            return False
        return True

    def _refuse(
        self, status: int, result: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        """A JSON answer: `{"ok": false, "reason": ...}`, counted under `result`."""
        self.server.count(result)
        body = json.dumps({"ok": False, "reason": reason}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if status not in (404, 503, 416):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


class PeerServer(BoundedHTTPServer):
    """Serve this node's blobs to its peers; `start()` on a daemon thread, `stop()`."""

    def __init__(
        self,
        *,
        node: str,
        tokens: TokenChecker,
        locate: BlobLocator,
        in_flight: InFlight,
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        bounds: PeerBounds = PeerBounds(),
    ) -> None:
        super().__init__(
            (host, port),
            _PeerHandler,
            max_connections=bounds.max_connections,
            header_timeout=bounds.header_timeout,
            request_timeout=bounds.header_timeout,
            write_timeout=bounds.write_timeout,
            max_body=0,
            min_file_rate=bounds.min_rate,
            max_file_rate=bounds.max_rate,
            thread_nice=SERVING_NICE,
        )
        self.node = node
        self.tokens = tokens
        self.locate = locate
        self.in_flight = in_flight
        self.bounds = bounds
        self.answer_headers[NODE_HEADER] = node
        self._uploads = 0
        self._uploads_lock = threading.Lock()
        self._upload_bytes = Counter(
            "modelcache_peer_upload_bytes",
            "Bytes of blobs and pieces sent to peers.",
            registry=registry,
        )
        self._requests = Counter(
            "modelcache_peer_requests",
            "Peer requests, by result: served, absent (not held), pending (a piece not "
            "verified yet), refused (max_uploads reached), unauthorized (no or a wrong "
            "token), bad_request (malformed, 405, 416).",
            ["result"],
            registry=registry,
        )
        for result in RESULTS:
            self._requests.labels(result)

    @property
    def uploads(self) -> int:
        """Bodies being sent now."""
        return self._uploads

    def count(self, result: str) -> None:
        self._requests.labels(result).inc()

    def take_upload(self) -> bool:
        with self._uploads_lock:
            if self._uploads >= self.bounds.max_uploads:
                return False
            self._uploads += 1
            return True

    def upload_done(self, sent: int) -> None:
        """A body's end, however it ended: its slot is free, its bytes counted."""
        with self._uploads_lock:
            self._uploads -= 1
        self._upload_bytes.inc(sent)
