"""Removal rules: live, rollback target and pinned versions survive; pins persist."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.store import ProtectedVersion, Store, VersionNotInstalled
from tests.unit.store.support import LORA, MODEL, install, sha


def _five(store: Store) -> None:
    for n in range(1, 6):
        install(store, MODEL, f"v{n}", {"w.bin": f"weights {n}".encode(), "base.bin": b"base"})


def test_remove_version_refuses_live_previous_and_pinned(store: Store) -> None:
    _five(store)
    store.flip(MODEL, "v1")
    store.flip(MODEL, "v2")
    store.pin(MODEL, "v3")
    for version, reason in [("v2", "live"), ("v1", "previous"), ("v3", "pinned")]:
        with pytest.raises(ProtectedVersion, match=f"default/sdxl.*'{version}': {reason}"):
            store.remove_version(MODEL, version)
        assert store.has_version(MODEL, version)
    store.remove_version(MODEL, "v4")
    assert not store.has_version(MODEL, "v4")
    with pytest.raises(VersionNotInstalled):
        store.remove_version(MODEL, "v4")
    store.unpin(MODEL, "v3")
    store.remove_version(MODEL, "v3")


def test_retain_removes_oldest_unprotected_first(store: Store) -> None:
    _five(store)
    store.flip(MODEL, "v1")  # oldest, but live
    assert store.retain(MODEL, keep=3) == ["v2", "v3"]
    assert [v.version for v in store.versions(MODEL)] == ["v1", "v4", "v5"]
    assert store.retain(MODEL, keep=3) == []


def test_retain_never_removes_live_previous_pinned_or_protected(store: Store) -> None:
    _five(store)
    store.flip(MODEL, "v2")
    store.flip(MODEL, "v3")
    store.pin(MODEL, "v1")
    assert store.retain(MODEL, keep=1, protect=["v4"]) == ["v5"]
    assert [v.version for v in store.versions(MODEL)] == ["v1", "v2", "v3", "v4"]


def test_retain_needs_keep_of_at_least_one(store: Store) -> None:
    with pytest.raises(ValueError, match="keep"):
        store.retain(MODEL, keep=0)


def test_pins_persist_across_store_objects(store: Store, root: Path) -> None:
    _five(store)
    store.pin(MODEL, "v2")
    store.pin(MODEL, "v2")
    assert Store(root).pins(MODEL) == {"v2"}
    with pytest.raises(VersionNotInstalled):
        store.pin(MODEL, "v9")
    Store(root).unpin(MODEL, "v2")
    assert store.pins(MODEL) == set()


def test_removing_versions_keeps_shared_blobs_until_unreferenced(store: Store) -> None:
    _five(store)
    store.flip(MODEL, "v5")
    store.retain(MODEL, keep=1)
    store.gc(hold_max_age=0)
    assert store.has_blob(sha(b"base"))
    assert store.has_blob(sha(b"weights 5"))
    assert not store.has_blob(sha(b"weights 1"))


def test_remove_model_removes_everything_of_it(store: Store) -> None:
    _five(store)
    install(store, LORA, "v1", {"w.bin": b"lora"})
    store.flip(MODEL, "v1")
    store.flip(MODEL, "v2")
    store.pin(MODEL, "v3")
    (store.current_path(MODEL).parent / "source.json").write_text("{}")  # the engine's record
    assert sorted(store.remove_model(MODEL)) == ["v1", "v2", "v3", "v4", "v5"]
    assert store.models() == [LORA]
    assert not (store.root / "models/default").exists()
    assert store.current(MODEL) is None
    assert store.previous(MODEL) is None
    assert store.pins(MODEL) == set()
    result = store.gc(hold_max_age=0)
    assert result.blobs_removed == 6
    assert store.has_blob(sha(b"lora"))
    assert store.remove_model(MODEL) == []
