"""Installing versions: hard-link trees, completeness, sharing, immutability."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelcache.api.manifest import Manifest
from modelcache.store import ModelRef, Store, StoreError, VersionNotInstalled
from tests.unit.store.support import LORA, MODEL, install, manifest, put_blob, sha, version_files


def test_install_links_every_file_to_its_blob(store: Store) -> None:
    built = install(
        store, MODEL, "v1", {"unet/w.bin": b"unet", "vae.bin": b"vae", "same.bin": b"vae"}
    )
    base = store.version_path(MODEL, "v1")
    assert base == store.root / "models/default/sdxl/versions/v1"
    assert version_files(store, MODEL, "v1") == {
        "unet/w.bin",
        "vae.bin",
        "same.bin",
        "manifest.json",
    }
    for entry in built.files:
        assert (base / entry.path).stat().st_ino == store.blob_path(entry.sha256).stat().st_ino
    assert store.blob_path(sha(b"vae")).stat().st_nlink == 3  # blob + two files, one digest
    assert Manifest.from_json((base / "manifest.json").read_bytes()) == built
    assert store.manifest(MODEL, "v1") == built
    assert store.has_version(MODEL, "v1")


def test_missing_blob_names_the_file_and_leaves_nothing_visible(store: Store) -> None:
    put_blob(store, b"present")
    wanted = manifest("v1", {"a.bin": b"present", "b.bin": b"absent"})
    with pytest.raises(StoreError, match=r"'b\.bin'.*missing") as caught:
        store.install_version(MODEL, wanted)
    assert "default/sdxl" in str(caught.value)
    assert not store.has_version(MODEL, "v1")
    assert not (store.root / "models/default/sdxl/versions/v1").exists()


def test_a_failure_mid_build_leaves_no_partial_version(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {f"f{i}.bin": bytes([i]) * 10 for i in range(5)}
    for data in files.values():
        put_blob(store, data)
    real_link = os.link
    calls = {"n": 0}

    def flaky_link(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", flaky_link)
    with pytest.raises(OSError, match="No space"):
        store.install_version(MODEL, manifest("v1", files))
    monkeypatch.undo()
    versions_dir = store.root / "models/default/sdxl/versions"
    assert sorted(p.name for p in versions_dir.iterdir()) == []
    assert store.versions(MODEL) == []
    store.install_version(MODEL, manifest("v1", files))  # and it works after
    assert store.has_version(MODEL, "v1")


def test_a_crash_before_the_rename_is_invisible(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"w.bin": b"w"}
    put_blob(store, b"w")

    def crash(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # simulated kill between build and publish

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        store.install_version(MODEL, manifest("v1", files))
    monkeypatch.undo()
    assert not store.has_version(MODEL, "v1")
    assert store.versions(MODEL) == []


def test_install_is_idempotent(store: Store) -> None:
    built = install(store, MODEL, "v1", {"w.bin": b"w"})
    before = store.versions(MODEL)[0].installed_at
    assert store.install_version(MODEL, built) == store.version_path(MODEL, "v1")
    assert store.versions(MODEL)[0].installed_at == before


def test_reinstall_repairs_a_damaged_tree(store: Store) -> None:
    built = install(store, MODEL, "v1", {"a/w.bin": b"w", "x.bin": b"x"})
    (store.version_path(MODEL, "v1") / "a/w.bin").unlink()
    with pytest.raises(StoreError, match="missing or damaged"):
        store.flip(MODEL, "v1")  # never flip to an incomplete version
    store.install_version(MODEL, built)
    assert (store.version_path(MODEL, "v1") / "a/w.bin").read_bytes() == b"w"
    store.flip(MODEL, "v1")


def test_versions_are_immutable(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"one"})
    put_blob(store, b"two")
    with pytest.raises(StoreError, match="immutable"):
        store.install_version(MODEL, manifest("v1", {"w.bin": b"two"}))
    assert (store.version_path(MODEL, "v1") / "w.bin").read_bytes() == b"one"


def test_shared_files_add_no_blob_bytes(store: Store) -> None:
    base = b"B" * 4096
    install(store, MODEL, "v1", {"base.bin": base, "lora.bin": b"L1"})
    after_first = store.usage()
    install(store, MODEL, "v2", {"base.bin": base, "lora.bin": b"L2"})
    after_second = store.usage()
    assert after_second.blob_bytes - after_first.blob_bytes == len(b"L2")
    install(store, LORA, "v1", {"renamed/base.bin": base})  # another model, same content
    assert store.usage().blob_bytes == after_second.blob_bytes
    assert store.blob_path(sha(base)).stat().st_nlink == 4


def test_versions_listed_oldest_first_even_within_one_clock_tick(store: Store) -> None:
    for name in ["v10", "v2", "a", "z"]:
        install(store, MODEL, name, {"w.bin": name.encode()})
    listed = store.versions(MODEL)
    assert [v.version for v in listed] == ["v10", "v2", "a", "z"]
    assert [v.installed_at for v in listed] == sorted(v.installed_at for v in listed)
    assert listed[0].files == 1
    assert listed[0].size == 3
    assert listed[0].manifest.version == "v10"


def test_unknown_version(store: Store) -> None:
    assert not store.has_version(MODEL, "v1")
    with pytest.raises(VersionNotInstalled, match=r"default/sdxl.*'v1'"):
        store.manifest(MODEL, "v1")
    with pytest.raises(VersionNotInstalled):
        store.flip(MODEL, "v1")


def test_a_directory_without_manifest_is_not_a_version(store: Store, root: Path) -> None:
    junk = root / "models/default/sdxl/versions/v1"
    junk.mkdir(parents=True)
    (junk / "w.bin").write_bytes(b"half")
    assert not store.has_version(MODEL, "v1")
    assert store.versions(MODEL) == []
    install(store, MODEL, "v1", {"w.bin": b"whole"})
    assert (junk / "w.bin").read_bytes() == b"whole"


def test_model_ref_is_checked_and_prints_as_ns_name() -> None:
    assert str(ModelRef("default", "sdxl")) == "default/sdxl"
    with pytest.raises(ValueError, match="namespace"):
        ModelRef("Bad_NS", "x")
    with pytest.raises(ValueError, match="model name"):
        ModelRef("ns", "../etc")


def test_models_lists_model_directories(store: Store) -> None:
    install(store, MODEL, "v1", {"w.bin": b"w"})
    install(store, LORA, "v1", {"w.bin": b"w"})
    assert store.models() == [MODEL, LORA]
