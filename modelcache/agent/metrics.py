"""Prometheus metrics of a node agent, fed from the event log (one source of truth)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from modelcache.agent.events import (
    AlreadyCached,
    Collected,
    Evicted,
    Failed,
    FileFetched,
    Flipped,
    ModelRemoved,
    PeerBadPiece,
    PeerUnavailable,
    PullEnded,
    PullStarted,
    VerifyFailed,
)
from modelcache.api import CacheEvent, ReloadOutcome
from modelcache.store import Usage


class AgentMetrics:
    """A registry per agent, so tests and several agents in one process do not collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tier_requests = Counter(
            "modelcache_tier_requests",
            "Files asked of a tier, by result: an L2 hit needs no download, an L2 miss goes to L3.",
            ["model", "tier", "result"],
            registry=r,
        )
        self.source_bytes = Counter(
            "modelcache_source_bytes", "Bytes downloaded from L3.", ["model", "scheme"], registry=r
        )
        self.pulled_bytes = Counter(
            "modelcache_pulled_bytes",
            "Bytes received for blobs pulled, by where they came from: l3 or a peer of the site.",
            ["model", "source"],
            registry=r,
        )
        self.piece_fetches = Counter(
            "modelcache_piece_fetches",
            "Pieces fetched, by source (l3, peer): the share from l3 is the fan-out's WAN cost.",
            ["model", "source"],
            registry=r,
        )
        self.peer_bad_pieces = Counter(
            "modelcache_peer_bad_pieces",
            "Pieces a peer served that failed the publisher's digest.",
            ["peer"],
            registry=r,
        )
        self.peer_failures = Counter(
            "modelcache_peer_failures",
            "Times a peer refused, failed or stalled while this node waited on it.",
            ["peer"],
            registry=r,
        )
        self.source_seconds = Counter(
            "modelcache_source_seconds",
            "Seconds spent downloading from L3.",
            ["model", "scheme"],
            registry=r,
        )
        self.verify_failures = Counter(
            "modelcache_verify_failures",
            "Files or blobs whose checksum did not match.",
            ["model"],
            registry=r,
        )
        self.flips = Counter("modelcache_flips", "Flips of `current`.", ["model"], registry=r)
        self.reloads = Counter(
            "modelcache_reloads", "Reload calls to inference pods.", ["model", "result"], registry=r
        )
        self.evictions = Counter(
            "modelcache_evictions", "Versions removed by retention.", ["model"], registry=r
        )
        self.errors = Counter(
            "modelcache_errors", "Errors, by operation.", ["operation"], registry=r
        )
        self.live_version = Gauge(
            "modelcache_live_version",
            "1 for the version `current` points at.",
            ["model", "version"],
            registry=r,
        )
        self.disk_bytes = Gauge(
            "modelcache_disk_bytes",
            "Disk of the cache root: total, free, and held in blobs.",
            ["kind"],
            registry=r,
        )
        self.collected_bytes = Counter(
            "modelcache_collected_bytes",
            "Bytes freed by blob collection (unreferenced blobs, old partials).",
            registry=r,
        )
        self.pulls_in_progress = Gauge(
            "modelcache_pulls_in_progress", "Versions being pulled now.", registry=r
        )
        self._live: dict[str, str] = {}
        self._pulling: set[tuple[str, str]] = set()  # (model, version) started, not yet ended

    def observe(self, event: CacheEvent) -> None:
        """Event-log listener: turn cache events into metric updates."""
        if isinstance(
            event, PullStarted | PullEnded | FileFetched | PeerBadPiece | PeerUnavailable
        ):
            self._observe_pull(event)
            return
        match event:
            case AlreadyCached():
                self.tier_requests.labels(event.model, "L2", "hit").inc(event.files)
            case VerifyFailed():
                self.verify_failures.labels(event.model).inc()
            case Flipped():
                self.flips.labels(event.model).inc()
                self.set_live(event.model, event.version)
            case ReloadOutcome():
                self.reloads.labels(event.model, "ok" if event.ok else "failed").inc()
            case Evicted():
                self.evictions.labels(event.model).inc()
            case ModelRemoved():
                self.evictions.labels(event.model).inc(len(event.versions))
                self.clear_live(event.model)
            case Collected():
                self.collected_bytes.inc(event.bytes_freed)
            case Failed():
                self.errors.labels(event.operation).inc()
                if event.operation == "pull":  # failed before or after its PullStarted
                    self._pulling.discard((event.model or "", event.version or ""))
                    self.pulls_in_progress.set(len(self._pulling))

    def _observe_pull(
        self, event: PullStarted | PullEnded | FileFetched | PeerBadPiece | PeerUnavailable
    ) -> None:
        """Pulls in progress, where a file's bytes and pieces came from, which peers failed."""
        match event:
            case PullStarted():
                self._pulling.add((event.model, event.version))
                self.pulls_in_progress.set(len(self._pulling))
            case PullEnded():
                self._pulling.discard((event.model, event.version))
                self.pulls_in_progress.set(len(self._pulling))
                from_l3 = event.bytes_downloaded - event.bytes_from_peers
                self.source_bytes.labels(event.model, event.scheme).inc(from_l3)
                self.source_seconds.labels(event.model, event.scheme).inc(event.seconds)
                self.tier_requests.labels(event.model, "L2", "hit").inc(event.files_cached)
                self.tier_requests.labels(event.model, "L2", "miss").inc(event.files_downloaded)
            case FileFetched():
                model = event.model
                self.pulled_bytes.labels(model, "l3").inc(event.bytes_from_l3)
                self.pulled_bytes.labels(model, "peer").inc(event.bytes_from_peers)
                self.piece_fetches.labels(model, "l3").inc(event.pieces_from_l3)
                self.piece_fetches.labels(model, "peer").inc(event.pieces_from_peers)
            case PeerBadPiece():
                self.peer_bad_pieces.labels(event.peer).inc()
            case PeerUnavailable():
                self.peer_failures.labels(event.peer).inc()

    def record_disk(self, usage: Usage) -> None:
        """The cache filesystem's figures, as the node's status reports them."""
        self.disk_bytes.labels("total").set(usage.total_bytes)
        self.disk_bytes.labels("free").set(usage.free_bytes)
        self.disk_bytes.labels("blobs").set(usage.blob_bytes)

    def set_live(self, model: str, version: str) -> None:
        """Exactly one live-version series per model."""
        old = self._live.get(model)
        if old is not None and old != version:
            self.live_version.remove(model, old)
        self.live_version.labels(model, version).set(1)
        self._live[model] = version

    def clear_live(self, model: str) -> None:
        """A model no longer on the node has no live version."""
        old = self._live.pop(model, None)
        if old is not None:
            self.live_version.remove(model, old)
