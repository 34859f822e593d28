"""This node's part in its site's fan-out (docs/fanout.md): the server of what it holds, and
the `Fleet` its pulls use to take pieces from the site's other nodes.

One per agent process: the server and the registry of blobs in flight outlive an engine
rebuilt on a config change, so a peer's download is never cut by one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from modelcache.fleet import InFlight, PeerBounds, PeerClient, PeerServer, TokenFile
from modelcache.sources import FanoutOptions, Fleet
from modelcache.store import Store


class Peering:
    """The peer server of node `node` and the clients of its peers. `store` gives the store
    of the moment (the agent's engine may be rebuilt on a config change)."""

    def __init__(
        self,
        node: str,
        token_file: Path,
        store: Callable[[], Store],
        registry: CollectorRegistry,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - the site's other nodes reach it
        port: int = 0,
        bounds: PeerBounds | None = None,
        origin_streams: int = 4,
        options: FanoutOptions | None = None,
    ) -> None:
        self.node = node
        self.tokens = TokenFile(token_file)  # TokenError: a missing or bad file, at start
        self.inflight = InFlight()
        self._store = store
        self.origin_streams = threading.Semaphore(origin_streams)
        self.options = options or FanoutOptions()
        self._clients: dict[tuple[str, str], PeerClient] = {}
        self._lock = threading.Lock()
        self.server = PeerServer(
            node=node,
            tokens=self.tokens,
            locate=self._locate,
            in_flight=self.inflight,
            registry=registry,
            host=host,
            port=port,
            bounds=bounds or PeerBounds(),
        )

    def _locate(self, sha256: str) -> Path | None:
        """A complete, verified blob of this node's store (only ever under its blobs/)."""
        store = self._store()
        return store.blob_path(sha256) if store.has_blob(sha256) else None

    @property
    def port(self) -> int:
        return self.server.server_port

    def fleet(self, members: Callable[[str, str], Mapping[str, str]]) -> Fleet:
        """The site as a pull sees it: `members(model, version)` maps the names of the nodes
        that want (or hold) that version to their peer URLs (this node, if named, is left
        out). One client per node and URL, kept: its connections are reused."""

        def clients(model: str, version: str) -> dict[str, PeerClient]:
            return {
                name: self._client(name, url)
                for name, url in sorted(members(model, version).items())
                if name != self.node
            }

        return Fleet(self.node, clients, self.inflight, self.origin_streams, self.options)

    def _client(self, name: str, url: str) -> PeerClient:
        with self._lock:
            client = self._clients.get((name, url))
            if client is None:
                client = self._clients[(name, url)] = PeerClient(name, url, self.tokens.current)
            return client

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
