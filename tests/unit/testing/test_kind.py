"""The kind cluster's shape: one cache directory per worker, where the chart and the studio
example look for it, so a test reads each node's cache from this host as on KubeletCluster."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelcache.testing.kind import CACHE_PATH, kind_config, worker_names

REPO = Path(__file__).resolve().parents[3]


def test_each_worker_mounts_its_own_directory_at_the_charts_cache_root(tmp_path: Path) -> None:
    dirs = [tmp_path / name for name in worker_names("e2e", 3)]
    config = kind_config(dirs)

    assert config["kind"] == "Cluster"
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker", "worker"]
    mounts = [node["extraMounts"] for node in config["nodes"][1:]]
    assert [m[0]["hostPath"] for m in mounts] == [str(d) for d in dirs]
    assert {m[0]["containerPath"] for m in mounts} == {CACHE_PATH}

    values = yaml.safe_load((REPO / "helm" / "modelcache" / "values.yaml").read_text())
    assert values["agent"]["cacheRoot"] == CACHE_PATH
    studio = list(yaml.safe_load_all((REPO / "examples/studio/k8s/studio.yaml").read_text()))
    daemonset = next(doc for doc in studio if doc["kind"] == "DaemonSet")
    volumes = daemonset["spec"]["template"]["spec"]["volumes"]
    assert {v["hostPath"]["path"] for v in volumes if "hostPath" in v} == {CACHE_PATH}


def test_worker_names_are_kinds_own() -> None:
    assert worker_names("mc", 3) == ["mc-worker", "mc-worker2", "mc-worker3"]
