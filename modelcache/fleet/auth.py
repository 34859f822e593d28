"""The peer credential: one bearer token the nodes share, read from a file (a mounted
Secret) and re-read when the file changes, so a rotation takes effect without a restart
and a node still presenting the old token is refused."""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import threading
from pathlib import Path

from modelcache.fs import read_capped

log = logging.getLogger(__name__)

MAX_TOKEN_FILE = 4096
TOKEN_BYTES = 32  # random bytes in a token: its urlsafe text is 43 characters
MIN_TOKEN_CHARS = 43
_URLSAFE = re.compile(r"[A-Za-z0-9_-]+")
_SCHEME = "bearer"


class TokenError(ValueError):
    """The token file holds no usable token: the message says why, never its bytes."""


def new_token() -> str:
    """A fresh token: TOKEN_BYTES random bytes, urlsafe base64."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def read_token(path: Path) -> str:
    """The token in `path` (whitespace around it stripped); TokenError when it is empty,
    too short to be TOKEN_BYTES random bytes, or not urlsafe text; OSError as reading."""
    raw = read_capped(path, MAX_TOKEN_FILE, what="peer token file")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenError(f"peer token file {path} is not ASCII text") from None
    if not text:
        raise TokenError(f"peer token file {path} is empty")
    if _URLSAFE.fullmatch(text) is None:
        raise TokenError(f"peer token file {path} holds characters outside urlsafe base64")
    if len(text) < MIN_TOKEN_CHARS:
        raise TokenError(
            f"peer token file {path} holds {len(text)} characters: a token is at least "
            f"{MIN_TOKEN_CHARS} ({TOKEN_BYTES} random bytes, urlsafe base64)"
        )
    return text


def bearer(token: str) -> str:
    """The Authorization header value that presents `token`."""
    return f"Bearer {token}"


class TokenFile:
    """The token in a file, checked on every call against the file's identity (inode, size,
    times): a changed file is read again, so the token of before a rotation stops working
    at the first request after it. A file that becomes unreadable or invalid refuses
    every token until it is fixed (logged once per change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, ...] | None = None
        self._token: bytes | None = None
        self._token = read_token(path).encode()  # a bad file at start is an error
        self._seen = self._identity()

    def current(self) -> str:
        """The token as of now (for this node's own client)."""
        token = self._refresh()
        if token is None:
            raise TokenError(f"peer token file {self.path} holds no usable token now")
        return token.decode()

    def check(self, header_value: str) -> bool:
        """Whether an Authorization header value presents the current token."""
        scheme, _, presented = header_value.strip().partition(" ")
        token = self._refresh()
        if token is None or scheme.lower() != _SCHEME:
            return False
        return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), token)

    def _identity(self) -> tuple[int, ...] | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return (
            status.st_ino,
            status.st_dev,
            status.st_size,
            status.st_mtime_ns,
            status.st_ctime_ns,
        )

    def _refresh(self) -> bytes | None:
        identity = self._identity()
        with self._lock:
            if identity != self._seen:
                self._seen = identity
                try:
                    self._token = read_token(self.path).encode()
                    log.info("peer token file %s changed: its new token is in use", self.path)
                except (OSError, TokenError) as error:
                    self._token = None
                    log.error("peer token file %s: %s; refusing every peer", self.path, error)
            return self._token
