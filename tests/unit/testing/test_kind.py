"""The kind cluster's shape: one cache directory per worker, where the chart and the studio
example look for it, so a test reads each node's cache from this host as on KubeletCluster."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from modelcache.testing.kind import (
    CACHE_PATH,
    CAP_SYS_RESOURCE,
    NodeNet,
    cni_conflist,
    kind_config,
    lacks_capability,
    node_network_script,
    tarball_layers,
    worker_names,
)

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


def test_no_default_cni_and_the_patches_this_machine_needs(tmp_path: Path) -> None:
    config = kind_config([tmp_path / "w1"])

    assert config["networking"]["disableDefaultCNI"] is True
    kubelet = yaml.safe_load(config["kubeadmConfigPatches"][0])
    assert kubelet["kind"] == "KubeletConfiguration"
    assert kubelet["failCgroupV1"] is False
    assert "restrict_oom_score_adj = true" in config["containerdConfigPatches"][0]
    (patch,) = config["kubeadmConfigPatchesJSON6902"]
    assert (patch["version"], patch["kind"]) == ("v1beta4", "ClusterConfiguration")
    ops = json.loads(patch["patch"])
    assert ops[0]["path"] == "/controllerManager/extraArgs/-"  # appended: kind's args stay
    assert ops[0]["value"] == {"name": "node-monitor-grace-period", "value": "20s"}


def test_the_cni_gives_pods_addresses_from_the_nodes_pod_cidr() -> None:
    conflist = json.loads(cni_conflist("10.244.1.0/24"))

    ptp, portmap = conflist["plugins"]
    assert ptp["type"] == "ptp"
    assert ptp["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert portmap["type"] == "portmap"


def test_a_node_routes_to_every_other_nodes_pods_and_masquerades_towards_the_host() -> None:
    one = NodeNet("mc-worker", "10.244.1.0/24", "10.89.0.3")
    two = NodeNet("mc-worker2", "10.244.2.0/24", "10.89.0.4")
    plane = NodeNet("mc-control-plane", "10.244.0.0/24", "10.89.0.2")

    script = node_network_script(one, [two, plane], "10.89.0.0/24")

    assert "ip route replace 10.244.2.0/24 via 10.89.0.4" in script
    assert "ip route replace 10.244.0.0/24 via 10.89.0.2" in script
    assert "10.244.1.0/24 via" not in script  # never a route to its own pods
    assert '"subnet": "10.244.1.0/24"' in script
    assert "-s 10.244.0.0/16 -d 10.89.0.0/24 -j MASQUERADE" in script
    assert script.count("iptables -t nat -A") == 1  # -C first: a rewire adds no second rule


@pytest.mark.parametrize(
    ("cap_bnd", "lacks"),
    [("000001ffffffffff", False), ("000001fffeffffff", True), ("0000000000000000", True)],
)
def test_the_runtime_wrapper_is_used_only_where_cap_sys_resource_is_withheld(
    cap_bnd: str, lacks: bool
) -> None:
    status = f"Name:\tpython\nCapInh:\t0000000000000000\nCapBnd:\t{cap_bnd}\n"
    assert lacks_capability(status, CAP_SYS_RESOURCE) is lacks


def test_only_the_imported_images_layers_are_dropped_from_a_node(tmp_path: Path) -> None:
    """The layers of a `docker save` tarball are its config's diff_ids (what containerd
    files them under); the node image's own, not yet unpacked, images keep theirs."""
    config = {
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64, "sha256:" + "b" * 64]}
    }
    manifest = [{"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": ["l1/layer.tar"]}]
    tarball = tmp_path / "image.tar"
    with tarfile.open(tarball, "w") as archive:
        for name, data in (("manifest.json", manifest), ("cfg.json", config)):
            raw = json.dumps(data).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))

    assert tarball_layers(tarball) == {"sha256:" + "a" * 64, "sha256:" + "b" * 64}
