"""Every change the engine makes to the store is a typed event, and the agent's metrics
are derived from those very events: each public path is driven for real (SeaweedFS as L3,
a real store on disk), and the events it emitted and the metrics are read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import (
    AlreadyCached,
    CacheEvent,
    Collected,
    EventLog,
    Evicted,
    FileFetched,
    Flipped,
    Installed,
    ModelRemoved,
    Pinned,
    PullEnded,
    PullStarted,
    Repaired,
    Unpinned,
    VerifyFailed,
    Warmed,
    read_events,
)
from modelcache.agent.metrics import AgentMetrics
from modelcache.sources import open_source, publish
from modelcache.store import ModelRef, Store
from modelcache.testing import ObjectStore
from tests.integration.cli.support import make_model

MODEL = ModelRef("studio", "events")
SIZES = {"lora/w.safetensors": 96 * 1024, "config.json": 300}


class Recorder:
    def __init__(self, log: EventLog) -> None:
        self.events: list[CacheEvent] = []
        log.subscribe(self.events.append)

    def take(self) -> list[type[CacheEvent]]:
        kinds = [type(e) for e in self.events]
        self.events.clear()
        return kinds


@pytest.fixture
def published(
    object_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[CacheEngine, str]:
    """An engine on an empty store, and the URL of three published versions."""
    monkeypatch.setenv("OSS_ENDPOINT", object_store.endpoint)
    bucket = f"events-{os.urandom(4).hex()}"
    object_store.create_bucket(bucket)
    url = f"oss://{bucket}/events"
    source = open_source(url)
    for seed, version in enumerate(["v1", "v2", "v3"]):
        publish(source, make_model(tmp_path / version, seed=seed, sizes=SIZES), version)
    log = EventLog(tmp_path / "events.jsonl", node="gpu-01")
    return CacheEngine(Store(tmp_path / "cache"), log), url


def test_each_store_change_is_its_typed_event_and_moves_its_metric(
    published: tuple[CacheEngine, str],
) -> None:
    engine, url = published
    metrics = AgentMetrics()
    engine.events.subscribe(metrics.observe)
    seen = Recorder(engine.events)

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    engine.pull(MODEL, url, "v1")
    assert seen.take() == [
        PullStarted,
        FileFetched,
        FileFetched,
        PullEnded,
        Installed,
        Warmed,
    ]
    model = str(MODEL)
    assert value("modelcache_source_bytes_total", model=model, scheme="oss") == sum(SIZES.values())
    assert value("modelcache_tier_requests_total", model=model, tier="L2", result="miss") == 2

    engine.pull(MODEL, url, "v1")
    assert seen.take() == [AlreadyCached]
    assert value("modelcache_tier_requests_total", model=model, tier="L2", result="hit") == 2

    engine.pull(MODEL, url, "v2")
    engine.pull(MODEL, url, "v3")
    seen.take()
    engine.flip(MODEL, "v1")
    engine.flip(MODEL, "v2")
    assert seen.take() == [Flipped, Flipped]
    assert value("modelcache_live_version", model=model, version="v2") == 1
    assert value("modelcache_live_version", model=model, version="v1") == 0
    engine.rollback(MODEL)
    (back,) = seen.events
    assert isinstance(back, Flipped)
    assert back.rollback
    assert back.version == "v1"
    seen.take()
    assert value("modelcache_flips_total", model=model) == 3

    assert engine.pin(MODEL, "v3")
    assert not engine.pin(MODEL, "v3")
    assert seen.take() == [Pinned]
    assert engine.unpin(MODEL, "v3")
    assert seen.take() == [Unpinned]

    # A bit flip in a held file: found, repaired from L3.
    held = engine.store.current_path(MODEL) / "lora/w.safetensors"
    with held.open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff" * 8)
    report = engine.verify([MODEL])
    assert report.repaired
    kinds = seen.take()
    assert VerifyFailed in kinds
    assert Repaired in kinds
    assert value("modelcache_verify_failures_total", model=model) >= 1

    # Retention: keep 1 -> v3 goes (v1 live, v2 its rollback target stay).
    assert engine.retain(MODEL, 1) == ["v3"]
    assert seen.take() == [Evicted]
    assert value("modelcache_evictions_total", model=model) == 1
    assert engine.gc() > 0
    assert seen.take() == [Collected]
    assert value("modelcache_collected_bytes_total") > 0

    assert sorted(engine.remove_model(MODEL)) == ["v1", "v2"]
    (removed,) = seen.events
    assert isinstance(removed, ModelRemoved)
    assert sorted(removed.versions) == ["v1", "v2"]
    assert value("modelcache_evictions_total", model=model) == 3
    assert value("modelcache_live_version", model=model, version="v1") == 0

    engine.events.close()
    logged = [r["event"] for r in read_events(Path(str(engine.events.path)))]
    assert logged[:6] == [
        "L3_PULL_START",
        "L3_FETCH",
        "L3_FETCH",
        "L3_PULL_END",
        "L2_INSTALL",
        "L2_WARMUP",
    ]
    assert logged[-1] == "L2_REMOVE"
