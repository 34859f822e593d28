"""Prometheus metrics of a node agent, fed from the event log (one source of truth)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from modelcache.agent.events import Event


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
        self.pulls_in_progress = Gauge(
            "modelcache_pulls_in_progress", "Versions being pulled now.", registry=r
        )
        self._live: dict[str, str] = {}
        self._pulling: set[tuple[str, str]] = set()  # (model, version) started, not yet ended

    def observe(self, record: dict[str, Any]) -> None:
        """Event-log listener: turn cache events into metric updates."""
        event = record.get("event")
        model = str(record.get("model", ""))
        if event == Event.PULL_START:
            self._pulling.add((model, str(record.get("version"))))
            self.pulls_in_progress.set(len(self._pulling))
        elif event == Event.PULL_END:
            self._pulling.discard((model, str(record.get("version"))))
            self.pulls_in_progress.set(len(self._pulling))
            scheme = str(record.get("scheme", ""))
            self.source_bytes.labels(model, scheme).inc(record.get("bytes_downloaded", 0))
            self.source_seconds.labels(model, scheme).inc(record.get("seconds", 0.0))
            self.tier_requests.labels(model, "L2", "hit").inc(record.get("files_cached", 0))
            self.tier_requests.labels(model, "L2", "miss").inc(record.get("files_downloaded", 0))
        elif event == Event.L2_HIT:
            self.tier_requests.labels(model, "L2", "hit").inc(record.get("files", 0))
        elif event == Event.VERIFY_FAILED:
            self.verify_failures.labels(model).inc()
        elif event == Event.FLIP:
            self.flips.labels(model).inc()
            self.set_live(model, str(record["version"]))
        elif event == Event.RELOAD:
            self.reloads.labels(model, "ok" if record.get("ok") else "failed").inc()
        elif event == Event.EVICT:
            self.evictions.labels(model).inc()
        elif event == Event.ERROR:
            operation = str(record.get("operation", "unknown"))
            self.errors.labels(operation).inc()
            if operation == "pull":  # failed before or after its PULL_START
                self._pulling.discard((model, str(record.get("version"))))
                self.pulls_in_progress.set(len(self._pulling))

    def set_live(self, model: str, version: str) -> None:
        """Exactly one live-version series per model."""
        old = self._live.get(model)
        if old is not None and old != version:
            self.live_version.remove(model, old)
        self.live_version.labels(model, version).set(1)
        self._live[model] = version
