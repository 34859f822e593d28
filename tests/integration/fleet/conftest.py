"""A real peer server on 127.0.0.1 over a blobs/ directory laid out as the store's, with
a real token file, and clients of it; nothing else (no SeaweedFS, no apiserver)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from modelcache.fleet import (
    InFlight,
    PeerBounds,
    PeerClient,
    PeerServer,
    TokenFile,
    new_token,
    read_token,
)

MIB = 1024 * 1024
PIECE = 4 * MIB


def blob_path(blobs: Path, sha256: str) -> Path:
    return blobs / "sha256" / sha256[:2] / sha256


def locator(blobs: Path) -> Callable[[str], Path | None]:
    """As the agent's: the blob's place under blobs/ when something is there."""

    def locate(sha256: str) -> Path | None:
        path = blob_path(blobs, sha256)
        return path if os.path.lexists(path) else None

    return locate


def rotate(path: Path) -> str:
    """A new token renamed over the old file, as a Secret update lands; the new token."""
    token = new_token()
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(token + "\n")
    temporary.replace(path)
    return token


@dataclass
class Peer:
    server: PeerServer
    blobs: Path
    token_file: Path
    in_flight: InFlight
    registry: CollectorRegistry

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def token(self) -> str:
        return read_token(self.token_file)

    def client(self, token: str | None = None) -> PeerClient:
        return PeerClient("peer-a", self.url, token or self.token)

    def put(self, data: bytes) -> str:
        """A complete blob, read-only as the store keeps them; its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = blob_path(self.blobs, sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o444)
        return sha256

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def start_peer(tmp_path: Path, bounds: PeerBounds | None = None) -> Peer:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    token_file = tmp_path / "peer-token"
    rotate(token_file)
    registry = CollectorRegistry()
    in_flight = InFlight()
    server = PeerServer(
        node="node-a",
        tokens=TokenFile(token_file),
        locate=locator(blobs),
        in_flight=in_flight,
        registry=registry,
        bounds=bounds or PeerBounds(),
    ).start()
    return Peer(server, blobs, token_file, in_flight, registry)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    running = start_peer(tmp_path)
    try:
        yield running
    finally:
        running.server.stop()
