"""current/previous: atomic relative symlinks, flips, rollback."""

from __future__ import annotations

import os

import pytest

from modelcache.store import Store, StoreError, VersionNotInstalled
from tests.unit.store.support import MODEL, install


def test_flip_points_current_and_keeps_the_rollback_target(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"one"})
    install(store, MODEL, "v2", {"w.bin": b"two"})
    assert store.current(MODEL) is None
    assert store.flip(MODEL, "v1") is None
    assert store.previous(MODEL) is None
    assert store.flip(MODEL, "v2") == "v1"
    assert (store.current(MODEL), store.previous(MODEL)) == ("v2", "v1")

    link = store.current_path(MODEL)
    assert link == store.root / "models/default/sdxl/current"
    assert os.readlink(link) == "versions/v2"  # relative: the root may be mounted anywhere
    assert (link / "w.bin").read_bytes() == b"two"


def test_flip_to_the_live_version_changes_nothing(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"one"})
    install(store, MODEL, "v2", {"w.bin": b"two"})
    store.flip(MODEL, "v1")
    store.flip(MODEL, "v2")
    assert store.flip(MODEL, "v2") == "v2"
    assert store.previous(MODEL) == "v1"


def test_rollback_swaps_current_and_previous(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"one"})
    install(store, MODEL, "v2", {"w.bin": b"two"})
    store.flip(MODEL, "v1")
    store.flip(MODEL, "v2")
    assert store.rollback(MODEL) == "v1"
    assert (store.current(MODEL), store.previous(MODEL)) == ("v1", "v2")
    assert (store.current_path(MODEL) / "w.bin").read_bytes() == b"one"
    assert store.rollback(MODEL) == "v2"


def test_rollback_without_previous(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"one"})
    with pytest.raises(StoreError, match="default/sdxl: no previous"):
        store.rollback(MODEL)
    store.flip(MODEL, "v1")
    with pytest.raises(StoreError, match="no previous"):
        store.rollback(MODEL)


def test_flip_refuses_versions_that_are_not_installed(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"one"})
    store.flip(MODEL, "v1")
    with pytest.raises(VersionNotInstalled, match="'v2'"):
        store.flip(MODEL, "v2")
    assert store.current(MODEL) == "v1"


def test_no_temporary_link_is_left_behind(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"one"})
    install(store, MODEL, "v2", {"w.bin": b"two"})
    store.flip(MODEL, "v1")
    store.flip(MODEL, "v2")
    names = sorted(p.name for p in store.current_path(MODEL).parent.iterdir())
    assert names == ["current", "previous", "versions"]


def test_a_dangling_link_reads_as_none(store: Store) -> None:
    store.current_path(MODEL).parent.mkdir(parents=True)
    os.symlink("versions/gone", store.current_path(MODEL))
    assert store.current(MODEL) is None
