"""Prometheus metrics of an inference pod's runtime; a registry per runtime unless shared."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From sub-millisecond (CPU, tiny adapters) to the seconds a cold 1.2 GB read can take.
SWAP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.live_version = Gauge(
            "modelcache_runtime_live_version",
            "1 for the adapter version the model serves now.",
            ["model", "version"],
            registry=r,
        )
        self.swaps = Counter(
            "modelcache_runtime_swaps", "Adapter versions swapped in.", ["model"], registry=r
        )
        self.failures = Counter(
            "modelcache_runtime_swap_failures",
            "Swaps refused, by reason (the live version stayed), or `torn` (a copy failed).",
            ["model", "reason"],
            registry=r,
        )
        self.seconds = Histogram(
            "modelcache_runtime_swap_seconds",
            "Seconds per swap phase: read, verify, stage, swap (drain + copy), total.",
            ["model", "phase"],
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "modelcache_runtime_requests_in_flight",
            "Requests inside the swap boundary now.",
            ["model"],
            registry=r,
        )
        self._live: dict[str, str] = {}

    def set_live(self, model: str, version: str | None) -> None:
        """Exactly one live-version series per model (none while the weights are torn)."""
        old = self._live.pop(model, None)
        if old is not None and old != version:
            self.live_version.remove(model, old)
        if version is not None:
            self.live_version.labels(model, version).set(1)
            self._live[model] = version
