"""Slow clients hold connections, yet the calls that matter get through: the agent's /metrics
scraped while 48 connections dribble a byte every second or two (and come back whenever
they are cut), at the server's real bounds; and past a small cap, by displacement."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter

from modelcache.serving import (
    HEADER_TIMEOUT_S,
    BoundedHandler,
    BoundedHTTPServer,
    MetricsServer,
    start_metrics_server,
)
from tests.unit.serving.clients import Slowloris, reason_of, status_of

SLOW = 48  # more than the old cap (32); fewer than this cap (64): no displacement needed


@pytest.fixture
def metrics() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("pulled_bytes", "bytes pulled", registry=registry).inc(42)
    server = start_metrics_server(0, "127.0.0.1", registry)
    try:
        yield server
    finally:
        server.stop()


def test_metrics_are_scraped_while_slow_clients_hold_connections(metrics: MetricsServer) -> None:
    """At the real bounds: 48 slow connections, scrapes every half second for longer than the
    header deadline; every scrape answers, and the dribblers are cut at the deadline."""
    url = f"http://127.0.0.1:{metrics.server_port}/metrics"
    held_during_scrapes = []
    with Slowloris(metrics.server_port, SLOW) as crowd:
        started = time.monotonic()
        while time.monotonic() - started < HEADER_TIMEOUT_S + 2:
            held_during_scrapes.append(crowd.open_now())
            scrape = requests.get(url, timeout=10)
            assert scrape.status_code == 200
            assert "pulled_bytes_total 42.0" in scrape.text
            time.sleep(0.5)
        cut_at_deadline = [said for said in crowd.refusals if status_of(said) == 408]
    assert min(held_during_scrapes) >= 40
    assert cut_at_deadline, "the head dribblers are cut at the header deadline"
    assert reason_of(cut_at_deadline[0]) == "the headers did not arrive within 5 s"


def test_metrics_answer_only_at_their_path(metrics: MetricsServer) -> None:
    base = f"http://127.0.0.1:{metrics.server_port}"
    assert requests.get(f"{base}/metrics?x=1", timeout=10).status_code == 200
    openmetrics = requests.get(
        f"{base}/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=10
    )
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert requests.get(f"{base}/other", timeout=10).status_code == 404


class _Hello(BoundedHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_json(200, {"ok": True})


def test_past_a_small_cap_slow_clients_are_displaced_by_calls() -> None:
    """40 slow clients against 16 connections: each call displaces the one that has waited
    longest, so it is answered, never refused."""
    server = BoundedHTTPServer(
        ("127.0.0.1", 0), _Hello, max_connections=16, header_timeout=2.0, request_timeout=4.0
    ).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        with Slowloris(server.server_port, 40, comeback=1.0):
            time.sleep(1.0)
            for _ in range(10):
                assert requests.get(url, timeout=10).status_code == 200
                time.sleep(0.3)
    finally:
        server.stop()
