"""The agent's Prometheus endpoint on the bounded server, not prometheus_client's own
(a thread per connection without limit and no timeouts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from modelcache.serving.httpserver import BoundedHandler, BoundedHTTPServer

METRICS_PATHS = frozenset({"/metrics", "/"})


class _MetricsHandler(BoundedHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.partition("?")[0]
        if path not in METRICS_PATHS:
            self.send_json(404, {"ok": False, "reason": f"no {path[:80]!r}: GET /metrics"})
            return
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self.send_bytes(200, encoder(self.server.registry), content_type)


class MetricsServer(BoundedHTTPServer):
    """GET /metrics: what `registry` holds, in the format the scraper asks for."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        super().__init__((host, port), _MetricsHandler)
        self.registry = registry


def start_metrics_server(port: int, host: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` on a daemon thread; `.stop()` ends it."""
    return MetricsServer(registry, host=host, port=port).start()
