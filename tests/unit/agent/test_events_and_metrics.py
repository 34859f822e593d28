"""Every cache event is one JSON line; metrics are derived from the same events."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import generate_latest

from modelcache.agent.events import Event, EventLog, read_events
from modelcache.agent.metrics import AgentMetrics


def test_events_are_json_lines_in_the_file_and_on_stdout(tmp_path: Path, capsys: object) -> None:
    log = EventLog(tmp_path / "events.jsonl", stdout=True, node="gpu-01")
    log.emit(Event.FLIP, model="default/lora", version="v2", previous="v1")
    log.close()
    (record,) = read_events(tmp_path / "events.jsonl")
    assert record["event"] == "L2_FLIP"
    assert record["node"] == "gpu-01"
    assert (record["model"], record["version"], record["previous"]) == ("default/lora", "v2", "v1")
    printed = capsys.readouterr().out.strip()  # type: ignore[attr-defined]
    assert json.loads(printed) == record


def sample(metrics: AgentMetrics, name: str, labels: dict[str, str]) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return value


def test_metrics_follow_the_events() -> None:
    metrics = AgentMetrics()
    log = EventLog()
    log.subscribe(metrics.observe)
    log.emit(Event.PULL_START, model="m", version="v1")
    assert sample(metrics, "modelcache_pulls_in_progress", {}) == 1
    log.emit(
        Event.PULL_END,
        model="m",
        version="v1",
        scheme="oss",
        files_downloaded=2,
        files_cached=3,
        bytes_downloaded=1000,
        seconds=0.5,
    )
    log.emit(Event.FLIP, model="m", version="v1", previous=None)
    log.emit(Event.FLIP, model="m", version="v2", previous="v1")
    log.emit(Event.RELOAD, model="m", version="v2", ok=False)

    assert sample(metrics, "modelcache_pulls_in_progress", {}) == 0
    assert sample(metrics, "modelcache_source_bytes_total", {"model": "m", "scheme": "oss"}) == 1000
    hits = {"model": "m", "tier": "L2", "result": "hit"}
    misses = {"model": "m", "tier": "L2", "result": "miss"}
    assert sample(metrics, "modelcache_tier_requests_total", hits) == 3
    assert sample(metrics, "modelcache_tier_requests_total", misses) == 2
    assert sample(metrics, "modelcache_live_version", {"model": "m", "version": "v2"}) == 1
    assert sample(metrics, "modelcache_live_version", {"model": "m", "version": "v1"}) is None
    assert sample(metrics, "modelcache_reloads_total", {"model": "m", "result": "failed"}) == 1
    assert b"modelcache_flips_total" in generate_latest(metrics.registry)


def test_a_failed_pull_leaves_no_pull_in_progress() -> None:
    metrics = AgentMetrics()
    log = EventLog()
    log.subscribe(metrics.observe)
    log.emit(Event.PULL_START, model="m", version="v1")
    log.emit(Event.PULL_START, model="m", version="v2")
    assert sample(metrics, "modelcache_pulls_in_progress", {}) == 2
    log.emit(Event.ERROR, operation="pull", model="m", version="v1", error="sha256 mismatch")
    log.emit(Event.ERROR, operation="pull", model="m", version="v9", error="disk full")  # unstarted
    assert sample(metrics, "modelcache_pulls_in_progress", {}) == 1
    assert sample(metrics, "modelcache_errors_total", {"operation": "pull"}) == 2
