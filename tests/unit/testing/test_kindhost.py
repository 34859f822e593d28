"""What a kind run's data root keeps after it: the dead nodes and their volumes are found,
and dropped after a killed run; a clean one keeps only the node image."""

from __future__ import annotations

from pathlib import Path

from modelcache.testing.kindhost import drop_killed_data_root, stored_containers


def data_root(tmp_path: Path, containers: list[str], volumes: list[str]) -> Path:
    root = tmp_path / "kind-docker"
    (root / "overlay2" / "layer").mkdir(parents=True)  # the node image: always there
    (root / "containers").mkdir()
    (root / "volumes").mkdir()
    (root / "volumes" / "metadata.db").write_bytes(b"")
    (root / "volumes" / "backingFsBlockDev").write_bytes(b"")
    for name in containers:
        (root / "containers" / name).mkdir()
    for name in volumes:
        (root / "volumes" / name / "_data").mkdir(parents=True)
    return root


def test_a_clean_data_root_keeps_no_container_and_is_kept(tmp_path: Path) -> None:
    root = data_root(tmp_path, [], [])
    assert stored_containers(root) == []
    drop_killed_data_root(root)
    assert (root / "overlay2" / "layer").is_dir(), "the node image stays: it is the cache"


def test_a_killed_runs_nodes_and_volumes_are_named_and_dropped(tmp_path: Path) -> None:
    root = data_root(tmp_path, ["a" * 64], ["b" * 64, "c" * 64])
    assert stored_containers(root) == ["a" * 12, f"volume {'b' * 12}", f"volume {'c' * 12}"]
    drop_killed_data_root(root)
    assert not root.exists()
    assert not root.with_name("kind-docker.dropped").exists()
    assert stored_containers(root) == []


def test_a_data_root_never_made_holds_nothing(tmp_path: Path) -> None:
    assert stored_containers(tmp_path / "absent") == []
