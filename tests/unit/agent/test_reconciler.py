"""The node reconciler's failure policy, on a real store with a file:// source (no server):
a permanent failure is reported as such and not retried until the source changes."""

from __future__ import annotations

import socket
from pathlib import Path

from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import CacheEvent, EventLog, Failed
from modelcache.agent.reconciler import DesiredModel, NodeReconciler, ReloadEndpoint, is_permanent
from modelcache.api import NodeModelStatus
from modelcache.sources import (
    ObjectNotFound,
    SourceError,
    SourceUnreachable,
    VersionMissing,
    open_source,
    publish,
)
from modelcache.store import ModelRef, Store

MODEL = ModelRef("studio", "lora")


def test_which_failures_are_permanent() -> None:
    assert is_permanent(VersionMissing("version 'v9' not found"))
    assert is_permanent(ObjectNotFound("no object v9/manifest.json"))
    assert is_permanent(SourceError("access denied (403 AccessDenied): check credentials"))
    assert not is_permanent(SourceUnreachable("connection refused"))
    assert not is_permanent(OSError(28, "No space left on device"))


def test_a_missing_version_is_failed_for_good_until_the_source_changes(tmp_path: Path) -> None:
    l3 = tmp_path / "l3"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"weights")
    publish(open_source(f"file://{l3}"), tmp_path / "model", "v1")
    events = EventLog()
    failures: list[CacheEvent] = []
    events.subscribe(lambda e: failures.append(e) if isinstance(e, Failed) else None)
    reconciler = NodeReconciler(
        CacheEngine(Store(tmp_path / "cache"), events), reload_targets=lambda d: []
    )

    def want(url: str) -> DesiredModel:
        return DesiredModel(model=MODEL, source=url, active="v9", versions=("v9",), retain=2)

    reconciler.step([want(f"file://{l3}")])
    assert reconciler.wait_idle(30)
    (version,) = reconciler.report(want(f"file://{l3}")).versions
    assert version.state == "Failed"
    assert version.message is not None
    assert "permanent" in version.message
    assert "attempt 1" in version.message
    assert len(failures) == 1

    again = reconciler.step([want(f"file://{l3}")])
    assert reconciler.wait_idle(30)
    assert len(failures) == 1, "a permanent failure is not hammered"
    assert again is not None
    assert again > 60, "the next try is far off"

    # The ModelVersion's source fixed: tried again at once (and here it works).
    moved = tmp_path / "l3-fixed"
    (tmp_path / "model2").mkdir()
    (tmp_path / "model2" / "w.bin").write_bytes(b"other weights")
    publish(open_source(f"file://{moved}"), tmp_path / "model2", "v9")
    reconciler.step([want(f"file://{moved}")])
    assert reconciler.wait_idle(30)
    reconciler.step([want(f"file://{moved}")])
    assert reconciler.engine.store.current(MODEL) == "v9"
    (version,) = reconciler.report(want(f"file://{moved}")).versions
    assert version.state == "Cached"


def test_the_report_is_the_models_nodecache_status_entry(tmp_path: Path) -> None:
    """What the reconciler reports is the api's status type itself, as the Kubernetes agent
    patches it: held versions, and each reload target's last call (here: nobody listening)."""
    l3 = tmp_path / "l3"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"weights")
    publish(open_source(f"file://{l3}"), tmp_path / "model", "v1")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/modelcache/reload"
    reconciler = NodeReconciler(
        CacheEngine(Store(tmp_path / "cache"), EventLog()),
        reload_targets=lambda d: [ReloadEndpoint(name="studio-0", url=url)],
    )
    want = DesiredModel(
        model=MODEL, source=f"file://{l3}", active="v1", versions=("v1",), retain=2, reload=True
    )
    reconciler.step([want])
    assert reconciler.wait_idle(30)
    reconciler.step([want])
    report = reconciler.report(want)
    assert isinstance(report, NodeModelStatus)
    wire = report.to_wire()
    assert (wire["namespace"], wire["name"], wire["active"]) == ("studio", "lora", "v1")
    assert "reloadedVersion" not in wire, "the pod has not acknowledged v1"
    assert wire["versions"] == [
        {"version": "v1", "state": "Cached", "bytes": 7, "bytesDone": 0, "bytesFromPeers": 0}
    ]
    (reload,) = wire["reloads"]
    assert (reload["pod"], reload["version"], reload["ok"], reload["answered"]) == (
        "studio-0",
        "v1",
        False,
        False,
    )
    assert reload["reason"].startswith("unreachable: ")
