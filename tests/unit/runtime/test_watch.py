"""Standalone mode: the runtime follows the `current` link."""

from __future__ import annotations

from pathlib import Path

from modelcache.runtime import LoraRuntime, watch_current
from modelcache.runtime.watch import CurrentWatcher
from modelcache.store import Store
from tests.unit.runtime.support import MODEL, install_version, make_adapter


def test_watch_follows_flips_and_skips_a_refused_version(
    runtime: LoraRuntime, store: Store, tmp_path: Path
) -> None:
    for version, adapter in (
        ("v1", make_adapter(1)),
        ("v2", make_adapter(2)),
        ("v3", make_adapter(3, rank=16)),
    ):
        install_version(store, version, adapter.files(tmp=tmp_path))
    watcher = CurrentWatcher(runtime, store.current_path(MODEL), retry_s=3600)
    assert watcher.check() is None  # nothing flipped yet
    store.flip(MODEL, "v1")
    result = watcher.check()
    assert result is not None
    assert result.version == "v1"
    assert watcher.check() is None  # no change, no swap
    store.flip(MODEL, "v3")
    assert watcher.check() is None
    assert watcher.last_error is not None
    assert "exceeds slot rank" in watcher.last_error.reason
    assert runtime.live_version == "v1"
    store.flip(MODEL, "v2")
    assert watcher.check() is not None
    assert runtime.live_version == "v2"


def test_watch_current_swaps_at_start(runtime: LoraRuntime, store: Store, tmp_path: Path) -> None:
    install_version(store, "v1", make_adapter(1).files(tmp=tmp_path))
    store.flip(MODEL, "v1")
    watcher = watch_current(runtime, store.current_path(MODEL), interval_s=0.01)
    try:
        assert runtime.live_version == "v1"
    finally:
        watcher.stop()
