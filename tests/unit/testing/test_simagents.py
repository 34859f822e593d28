"""The simulated disk answers the real node reconciler as a node's store would, so a
simulated agent's status is the one a real agent writes (bench/rollback_fleet.py)."""

from __future__ import annotations

from typing import cast

from modelcache.agent.engine import CacheEngine
from modelcache.agent.reconciler import DesiredModel, NodeReconciler, ReloadEndpoint
from modelcache.store import ModelRef
from modelcache.testing.simagents import SIMULATED_VERSION_BYTES, MemoryEngine

MODEL = ModelRef("studio", "lora")


def desired(active: str, versions: tuple[str, ...] = ("v1", "v2")) -> DesiredModel:
    return DesiredModel(
        model=MODEL,
        source="oss://bench/lora",
        active=active,
        versions=versions,
        retain=3,
        reload=True,
    )


def settled(reconciler: NodeReconciler, entry: DesiredModel) -> None:
    reconciler.step([entry])
    assert reconciler.wait_idle(timeout=10)
    reconciler.step([entry])  # the pull ended: this step flips


def test_a_rollback_to_a_held_version_flips_and_reports_it_served() -> None:
    engine = MemoryEngine()
    calls: list[str] = []

    def no_pods(entry: DesiredModel) -> list[ReloadEndpoint]:
        calls.append(entry.key)
        return []

    changes: list[int] = []
    reconciler = NodeReconciler(
        cast(CacheEngine, engine),
        reload_targets=no_pods,
        on_change=lambda: changes.append(1),
    )
    settled(reconciler, desired("v1"))
    settled(reconciler, desired("v2"))
    assert engine.store.current(MODEL) == "v2"

    changes.clear()
    reconciler.step([desired("v1")])  # the rollback: v1 is held, no pull

    assert engine.store.current(MODEL) == "v1"
    assert changes  # the agent's status reporter is told at once
    report = reconciler.report(desired("v1"))
    assert (report.active, report.reloaded_version) == ("v1", "v1")
    assert [(v.version, v.state, v.bytes) for v in report.versions] == [
        ("v1", "Cached", SIMULATED_VERSION_BYTES),
        ("v2", "Cached", SIMULATED_VERSION_BYTES),
    ]
    assert calls  # it looked for the node's pods before calling it reloaded
    assert [v for _, _, v in engine.store.flips] == ["v1", "v2", "v1"]


def test_a_version_not_held_is_pulled_before_it_is_served() -> None:
    engine = MemoryEngine()
    reconciler = NodeReconciler(cast(CacheEngine, engine), reload_targets=lambda _: [])
    reconciler.step([desired("v1", ("v1",))])
    assert reconciler.wait_idle(timeout=10)
    assert engine.store.current(MODEL) is None  # the pull ran in the background
    reconciler.step([desired("v1", ("v1",))])
    assert engine.store.current(MODEL) == "v1"
    assert engine.store.usage().blob_bytes == SIMULATED_VERSION_BYTES
