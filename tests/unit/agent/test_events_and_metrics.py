"""Every cache event is one JSON line; metrics are derived from the same events (those the
engine really emits: tests/integration/agent/test_events.py)."""

from __future__ import annotations

import json
from pathlib import Path

from modelcache.agent.events import EventLog, Failed, Flipped, PullStarted, read_events
from modelcache.agent.metrics import AgentMetrics


def test_events_are_json_lines_in_the_file_and_on_stdout(tmp_path: Path, capsys: object) -> None:
    log = EventLog(tmp_path / "events.jsonl", stdout=True, node="gpu-01")
    log.emit(Flipped(model="default/lora", version="v2", previous="v1"))
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


def test_a_failed_pull_leaves_no_pull_in_progress() -> None:
    metrics = AgentMetrics()
    log = EventLog()
    log.subscribe(metrics.observe)
    for version in ("v1", "v2"):
        log.emit(
            PullStarted(
                model="m",
                version=version,
                source="oss://b/m",
                files=1,
                files_to_download=1,
                bytes_to_download=1,
            )
        )
    assert sample(metrics, "modelcache_pulls_in_progress", {}) == 2
    log.emit(Failed(operation="pull", model="m", version="v1", error="sha256 mismatch"))
    log.emit(Failed(operation="pull", model="m", version="v9", error="disk full"))  # unstarted
    assert sample(metrics, "modelcache_pulls_in_progress", {}) == 1
    assert sample(metrics, "modelcache_errors_total", {"operation": "pull"}) == 2
