"""The peer client: a piece (or a range of a blob) from another node of the fleet, as a
stream of chunks with every bound a download needs: connect and read timeouts, an overall
deadline that scales with the length, and exactly the bytes announced and asked for.

The bytes are not trusted: the caller checks a piece against the publisher's digest.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from modelcache.fleet.auth import bearer
from modelcache.fleet.server import NODE_HEADER, PIECE_HEADER, VERIFIED_HEADER
from modelcache.serving import MIN_FILE_RATE, parse_content_length

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
CHUNK = 1024 * 1024
MAX_REASON = 1024  # bytes of a refusal's body read, for the error message
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
# A kept-alive connection the server has since closed (it displaces its idlest one at its
# connection bound) fails before any answer: one more try, on a fresh connection, before
# the peer counts as unreachable. Never on an answer (a 503 "busy" is the caller's).
_STALE_CONNECTION_RETRY = Retry(
    total=1, connect=1, read=1, status=0, other=0, redirect=0, raise_on_status=False
)


class PeerError(Exception):
    """A peer did not give what was asked: take it elsewhere (another peer, or L3)."""


class PiecePending(PeerError):  # noqa: N818 - the contract's names
    """The peer is downloading that blob but has not verified that piece yet: ask again.
    `verified`: how many pieces of the blob it has verified (-1 when it did not say), so a
    waiting node tells a peer that is slow from one that is stuck."""

    def __init__(self, message: str, verified: int = -1) -> None:
        super().__init__(message)
        self.verified = verified


class PieceAbsent(PeerError):  # noqa: N818 - the contract's names
    """The peer holds neither the blob nor (for a piece) a verified piece of it."""


class PeerBusy(PeerError):  # noqa: N818 - the contract's names
    """503 with `Retry-After` and no pending piece: the peer is at its cap of uploads at
    once, serving others. It is alive and holds what it holds: ask again soon."""


class PeerUnreachable(PeerError):  # noqa: N818 - the contract's names
    """No answer in time: connection refused or reset, a timeout, too slow, or a 5xx."""


class PeerRefused(PeerError):  # noqa: N818 - the contract's names
    """401 or 403: the peer does not take our credential (a rotation not seen by one side)."""


class PeerMisbehaved(PeerError):  # noqa: N818 - the contract's names
    """An answer that breaks the protocol: more bytes than asked, a Content-Length that is
    missing, wrong or not kept, an encoded body."""


class Body(Iterator[bytes]):
    """The body of one answer, chunk by chunk, exactly `length` bytes; `close()` it (or
    use `with`) when not read to the end."""

    def __init__(
        self, peer: str, response: requests.Response, length: int, deadline: float
    ) -> None:
        self.peer, self.length, self.received = peer, length, 0
        self._response, self._deadline = response, deadline

    def __next__(self) -> bytes:
        if self.received >= self.length:
            self.close()
            raise StopIteration
        try:
            # read1: what has arrived (up to CHUNK), so a trickle meets the deadline below
            chunk: bytes = self._response.raw.read1(
                min(CHUNK, self.length - self.received), decode_content=False
            )
        except _TRANSPORT_ERRORS as error:
            self.close()
            raise PeerUnreachable(f"peer {self.peer}: {type(error).__name__}: {error}") from None
        if not chunk:
            self.close()
            raise PeerMisbehaved(
                f"peer {self.peer} ended its answer after {self.received} of {self.length} bytes"
            )
        self.received += len(chunk)
        if time.monotonic() > self._deadline:
            self.close()
            raise PeerUnreachable(f"peer {self.peer} is too slow: {self.received} bytes so far")
        return chunk

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PeerClient:
    """One peer, as `name` at `base_url` (http://host:port). `token` is the fleet's bearer
    token, or a callable giving the current one (auth.TokenFile.current). Safe to share
    between threads (a session per thread)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        token: str | Callable[[], str],
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        min_rate: float = MIN_FILE_RATE,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"peer {name}: {base_url[:80]!r} is not an http(s) URL")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeouts = (connect_timeout, read_timeout)
        self.min_rate = min_rate
        self._local = threading.local()

    def piece(self, sha256: str, index: int, size: int, *, length: int | None = None) -> Body:
        """Piece `index` of the blob cut in `size`-byte pieces: at most `size` bytes, exactly
        `length` when given (the caller knows the file's size). Raises PiecePending,
        PieceAbsent, PeerRefused, PeerUnreachable, PeerMisbehaved (all PeerErrors)."""
        if index < 0 or size <= 0:
            raise ValueError(f"piece {index} of size {size}")
        path = f"/v1/pieces/{_digest(sha256)}/{index}?size={size}"
        response = self._get(path, {})
        if response.status_code == 200:
            return self._body(response, most=size, exact=length)
        raise self._failure(response, f"piece {index} of {sha256}")

    def blob(self, sha256: str, start: int = 0, length: int | None = None) -> Body:
        """`length` bytes of a complete blob from `start` (the rest of it when None)."""
        if start < 0 or (length is not None and length <= 0):
            raise ValueError(f"bytes {start}+{length}")
        headers = {}
        if length is not None:
            headers["Range"] = f"bytes={start}-{start + length - 1}"
        elif start:
            headers["Range"] = f"bytes={start}-"
        response = self._get(f"/v1/blobs/{_digest(sha256)}", headers)
        if response.status_code == (206 if headers else 200):
            if headers:
                self._check_content_range(response, start, length)
            return self._body(response, most=length, exact=length)
        raise self._failure(response, f"blob {sha256}")

    def holds(self, sha256: str) -> bool:
        """Whether the peer holds the complete blob (asks for its first byte)."""
        response = self._get(f"/v1/blobs/{_digest(sha256)}", {"Range": "bytes=0-0"})
        try:
            if response.status_code in (200, 206, 416):  # 416: it holds an empty blob
                return True
            if response.status_code == 404:
                return False
        finally:
            response.close()
        raise self._failure(response, f"blob {sha256}")

    def close(self) -> None:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy between two nodes, whatever the env says
            adapter = HTTPAdapter(max_retries=_STALE_CONNECTION_RETRY)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def _get(self, path: str, headers: dict[str, str]) -> requests.Response:
        token = self._token() if callable(self._token) else self._token
        headers = {**headers, "Authorization": bearer(token), "Accept-Encoding": "identity"}
        try:
            return self._session().get(
                self.base_url + path,
                headers=headers,
                timeout=self.timeouts,
                stream=True,
                allow_redirects=False,
            )
        except _TRANSPORT_ERRORS as error:
            if _refused(error):  # nothing listens there yet: a peer still starting
                raise PieceAbsent(
                    f"peer {self.name}: not serving yet (connection refused)"
                ) from None
            raise PeerUnreachable(f"peer {self.name}: {type(error).__name__}: {error}") from None

    def _body(self, response: requests.Response, *, most: int | None, exact: int | None) -> Body:
        """The answer's body, once its head promises what was asked; else it is closed."""
        try:
            length = self._promised(response)
            if most is not None and length > most:
                raise PeerMisbehaved(
                    f"peer {self.name} announces {length} bytes where at most {most} were asked"
                )
            if exact is not None and length != exact:
                raise PeerMisbehaved(
                    f"peer {self.name} announces {length} bytes where {exact} were asked"
                )
        except PeerError:
            response.close()
            raise
        deadline = time.monotonic() + sum(self.timeouts) + length / self.min_rate
        return Body(self.name, response, length, deadline)

    def _promised(self, response: requests.Response) -> int:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise PeerMisbehaved(f"peer {self.name} sent a {encoding[:20]!r}-encoded body")
        if "Transfer-Encoding" in response.headers:
            raise PeerMisbehaved(f"peer {self.name} sent a body without a Content-Length")
        value = response.headers.get("Content-Length")
        try:
            if value is None:
                raise ValueError("none")
            return parse_content_length(value)
        except ValueError:
            raise PeerMisbehaved(f"peer {self.name} sent a bad Content-Length") from None

    def _check_content_range(
        self, response: requests.Response, start: int, length: int | None
    ) -> None:
        value = response.headers.get("Content-Range", "")
        found = re.fullmatch(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)", value.strip())
        if (
            found is None
            or int(found[1]) != start
            or (length is not None and int(found[2]) != start + length - 1)
        ):
            response.close()
            raise PeerMisbehaved(f"peer {self.name} sent Content-Range {value[:80]!r}")

    def _failure(self, response: requests.Response, what: str) -> PeerError:
        """The error an answer other than the body stands for (the answer closed)."""
        status = response.status_code
        reason = _reason(response)
        node = response.headers.get(NODE_HEADER, self.name)[:80]
        said = f"peer {self.name} ({node}) answered {status} for {what}: {reason}"
        if status == 503 and response.headers.get(PIECE_HEADER) == "pending":
            count = response.headers.get(VERIFIED_HEADER, "")
            verified = int(count) if count.isascii() and count.isdigit() and len(count) < 10 else -1
            return PiecePending(said, verified)
        if status == 503 and "Retry-After" in response.headers:
            return PeerBusy(said)
        if status == 404:
            return PieceAbsent(said)
        if status in (401, 403):
            return PeerRefused(said)
        if status >= 500:
            return PeerUnreachable(said)
        return PeerError(said)


def _refused(error: BaseException) -> bool:
    """Whether the connection was refused (a closed port), however requests wraps it."""
    seen: BaseException = error
    for _ in range(8):  # requests -> urllib3's MaxRetryError -> NewConnectionError -> OSError
        if isinstance(seen, ConnectionRefusedError):
            return True
        cause = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if cause is None and seen.args:
            cause = seen.args[0]
        if not isinstance(cause, BaseException):
            return False
        seen = cause
    return False


def _digest(sha256: str) -> str:
    if _SHA256.fullmatch(sha256) is None:
        raise ValueError(f"{sha256[:80]!r} is not a sha256 (64 lowercase hex)")
    return sha256


def _reason(response: requests.Response) -> str:
    """A refusal's one-line reason, from at most MAX_REASON bytes of its body."""
    try:
        raw = response.raw.read(MAX_REASON, decode_content=False)
    except _TRANSPORT_ERRORS:
        raw = b""
    finally:
        response.close()
    try:
        reason = json.loads(raw)["reason"]
    except (ValueError, KeyError, TypeError):
        reason = raw.decode("utf-8", "replace")
    return " ".join(str(reason).split())[:200] or "(no reason given)"
