"""The studio example as inference pods on real kubelets, driven by the chart's operator
and agents: v1 everywhere, v2 canary first then waves, a rollback with no download.

Everything asserted comes from what the cluster and the pods report: the ModelVersion's
status, the NodeCaches, each studio pod's own /healthz and /generate over its pod IP,
and each agent pod's and operator pod's /metrics.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from examples.studio import adapters
from examples.studio.model import StudioConfig, apply_adapter, build_model, generate, image_sha256
from modelcache.api.k8s import GROUP, VERSION
from modelcache.sources import Credentials, open_source, publish
from modelcache.testing.objectstore import ACCESS_KEY, SECRET_KEY, ObjectStore
from tests.cluster.conftest import Cluster, PodUnreachable, Release, pod_http, pods
from tests.cluster.test_deploy import eventually
from tests.integration.operator.test_end_to_end import NodeCacheRecorder

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "examples" / "studio" / "k8s"
NAMESPACE, NAME = "studio", "sdxl"  # as examples/studio/k8s/*.yaml name them
BUCKET, PREFIX = "studio-models", "sdxl-lora"
VERSIONS = {"v1": (1, 8), "v2": (2, 4)}  # seed, rank
SEED = 42


class References:
    """The image a freshly built studio model with a version's adapter generates (no runtime)."""

    def __init__(self, made: dict[str, Path]) -> None:
        self.made = made
        self.digests: dict[str, str] = {}

    def digest(self, version: str) -> str:
        if version not in self.digests:
            model = apply_adapter(build_model(StudioConfig()), self.made[version])
            self.digests[version] = image_sha256(generate(model, seed=SEED, steps=20))
        return self.digests[version]


@pytest.fixture(scope="module")
def studio(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    cluster_store: ObjectStore,
    modelcache_release: Release,
    studio_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[References]:
    """Two adapter versions published to the store, the studio DaemonSet and the example
    ModelVersion applied with kubectl, as a user would."""
    work = tmp_path_factory.mktemp("studio")
    made = {}
    for version, (seed, rank) in VERSIONS.items():
        out = work / version
        assert adapters.main([str(out), "--seed", str(seed), "--rank", str(rank)]) == 0
        made[version] = out
    cluster_store.create_bucket(BUCKET)
    source = open_source(
        f"s3://{BUCKET}/{PREFIX}",
        Credentials(
            endpoint=cluster_store.endpoint,
            access_key_id=ACCESS_KEY,
            access_key_secret=SECRET_KEY,
        ),
    )
    for version, directory in made.items():
        publish(source, directory, version)

    e2e_cluster.kubectl("apply", "-f", str(MANIFESTS / "studio.yaml"))
    e2e_cluster.kubectl("apply", "-f", str(MANIFESTS / "modelversion.yaml"))
    yield References(made)
    e2e_cluster.kubectl("delete", "-f", str(MANIFESTS / "modelversion.yaml"), "--wait=true")
    e2e_cluster.kubectl("delete", "-n", NAMESPACE, "daemonset/studio", "--wait=true")


def model_version(api: client.ApiClient) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "modelversions", NAME
        )
    )


def settled_on(api: client.ApiClient, version: str, nodes: int) -> bool:
    body = model_version(api)
    status = body.get("status") or {}
    return bool(
        body["spec"]["version"] == version
        and status.get("ready") == f"{nodes}/{nodes}"
        and status.get("phase") == "Available"
    )


def studio_pods(api: client.ApiClient) -> dict[str, Any]:
    """node name -> its Running studio pod."""
    return {
        p.spec.node_name: p
        for p in pods(api, NAMESPACE, "app=studio")
        if p.status.phase == "Running" and p.status.pod_ip
    }


def live_version(api: client.ApiClient, pod: Any) -> str | None:
    try:
        health = pod_http(api, pod, 8000, "healthz")
    except PodUnreachable:
        return None
    live: str | None = health["live_version"]
    return live


def all_live(api: client.ApiClient, version: str, nodes: int) -> bool:
    found = studio_pods(api)
    return len(found) == nodes and all(live_version(api, p) == version for p in found.values())


def generated(api: client.ApiClient, pod: Any) -> dict[str, Any]:
    answer: dict[str, Any] = pod_http(
        api, pod, 8000, "generate", json_body={"seed": SEED}, timeout=120
    )
    return answer


def downloaded_bytes(api: client.ApiClient, namespace: str) -> dict[str, float]:
    """Bytes each node's agent pulled from L3, from its own /metrics (scraped from its pod)."""
    totals = {}
    for pod in pods(api, namespace, "app.kubernetes.io/component=agent"):
        text = pod_http(api, pod, 9400, "metrics")
        totals[pod.spec.node_name] = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "modelcache_source_bytes"
            for sample in family.samples
            if sample.name == "modelcache_source_bytes_total"
            and sample.labels.get("model") == f"{NAMESPACE}/{NAME}"
        )
    return totals


def operator_phases(api: client.ApiClient, namespace: str) -> list[dict[str, float]]:
    """Each operator replica's phase series for the studio ModelVersion, from its pod's
    own /metrics: phase -> value (none: the replica does not report it)."""
    reports = []
    for pod in pods(api, namespace, "app.kubernetes.io/component=operator"):
        text = pod_http(api, pod, 9470, "metrics")
        reports.append(
            {
                sample.labels["phase"]: sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "modelcache_modelversion_phase"
                for sample in family.samples
                if sample.labels.get("model") == f"{NAMESPACE}/{NAME}"
            }
        )
    return reports


def reported_by_the_leader_alone(api: client.ApiClient, namespace: str, phase: str) -> bool:
    """Of the chart's two operator replicas, the leader reports `phase` and the standby
    nothing."""
    reports = operator_phases(api, namespace)
    leaders = [r for r in reports if r]
    return len(reports) == 2 and len(leaders) == 1 and leaders[0].get(phase) == 1


def watch_status(cluster: Cluster, log: Path) -> subprocess.Popen[str]:
    """`modelcache status --watch` on the example's ModelVersion, its output to `log` (a
    file, not a pipe nobody reads while the test waits)."""
    args = ["status", NAME, "-n", NAMESPACE, "--watch", "--interval", "0.2", "--timeout", "400"]
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "modelcache", *args, "--kubeconfig", str(cluster.kubeconfig)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )


def watched(process: subprocess.Popen[str], log: Path) -> tuple[str, list[str]]:
    """The whole output of a `status --watch` that should have ended, and its last block
    (the view it settled on, then the outcome line)."""
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"status --watch did not end:\n{log.read_text()}") from None
    text = log.read_text()
    assert process.returncode == 0, text
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if re.match(r"^\[\s*\d+s\] ", line)]
    assert heads, text
    return text, lines[heads[-1] :]


def test_studio_pods_roll_out_v2_canary_first_and_roll_back_without_download(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    modelcache_release: Release,
    studio: References,
    tmp_path: Path,
) -> None:
    nodes = len(e2e_cluster.nodes)
    eventually(lambda: settled_on(cluster_api, "v1", nodes), f"READY {nodes}/{nodes} on v1", 300)
    eventually(lambda: all_live(cluster_api, "v1", nodes), "every studio pod on v1", 180)
    found = studio_pods(cluster_api)
    assert sorted(found) == [n.name for n in e2e_cluster.nodes], "one studio pod per node"
    for node, pod in found.items():
        answer = generated(cluster_api, pod)
        assert answer["version"] == "v1", node
        assert answer["image_sha256"] == studio.digest("v1"), f"{node} serves a different v1"
    shown = e2e_cluster.kubectl("get", "mv", "-n", NAMESPACE)
    assert f"{nodes}/{nodes}" in shown
    assert "Available" in shown

    # v2: prefetched everywhere, then the canary flips, then the next wave.
    recorder = NodeCacheRecorder(
        client.CustomObjectsApi(cluster_api),
        [n.name for n in e2e_cluster.nodes],
        NAMESPACE,
        NAME,
    )
    e2e_cluster.kubectl(
        "patch", "mv", NAME, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"version":"v2"}}'
    )
    status = watch_status(e2e_cluster, tmp_path / "status-v2.log")
    eventually(lambda: settled_on(cluster_api, "v2", nodes), f"READY {nodes}/{nodes} on v2", 300)
    text, last = watched(status, tmp_path / "status-v2.log")
    names = [n.name for n in e2e_cluster.nodes]  # the planner's order: sorted
    assert "RollingOut" in text or "Prefetching" in text, f"no rollout seen in progress:\n{text}"
    assert f"  wave 1 (canary): {names[0]}: done" in last, text
    assert f"  wave 2: {', '.join(names[1:])}: done" in last, text
    for node in names:
        assert any(line.split()[:1] == [node] and "serving v2" in line for line in last), text
    assert last[-1] == f"{NAMESPACE}/{NAME} v2: Available, {nodes}/{nodes} nodes serve it", text
    eventually(lambda: all_live(cluster_api, "v2", nodes), "every studio pod on v2", 120)
    states = recorder.stop()
    flipped = [sum(1 for m in s.values() if m["active"] == "v2") for s in states]
    assert 1 in flipped, f"no state with the canary alone on v2: {flipped}"
    assert flipped.index(1) < flipped.index(nodes), "the canary flipped before the wave"
    for node, pod in studio_pods(cluster_api).items():
        answer = generated(cluster_api, pod)
        assert answer["version"] == "v2", node
        assert answer["image_sha256"] == studio.digest("v2"), f"{node} serves a different v2"

    # Rollback: v1 is still on every node's disk, so nothing is downloaded.
    before = downloaded_bytes(cluster_api, modelcache_release.namespace)
    assert sorted(before) == [n.name for n in e2e_cluster.nodes]
    assert all(b > 0 for b in before.values()), before
    kubeconfig = ["--kubeconfig", str(e2e_cluster.kubeconfig)]
    rollback = subprocess.run(
        [sys.executable, "-m", "modelcache", "rollback", NAME, "-n", NAMESPACE, *kubeconfig],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rollback.returncode == 0, rollback.stderr
    assert "v2 -> v1" in rollback.stdout
    status = watch_status(e2e_cluster, tmp_path / "status-rollback.log")
    eventually(lambda: settled_on(cluster_api, "v1", nodes), "READY on v1 again", 120)
    text, last = watched(status, tmp_path / "status-rollback.log")
    assert f"  wave 1: {', '.join(names)}: done" in last, f"a rollback flips all at once:\n{text}"
    assert last[-1] == f"{NAMESPACE}/{NAME} v1: Available, {nodes}/{nodes} nodes serve it", text
    eventually(lambda: all_live(cluster_api, "v1", nodes), "every studio pod back on v1", 60)
    for node, pod in studio_pods(cluster_api).items():
        assert generated(cluster_api, pod)["image_sha256"] == studio.digest("v1"), node
    assert downloaded_bytes(cluster_api, modelcache_release.namespace) == before
    eventually(
        lambda: reported_by_the_leader_alone(
            cluster_api, modelcache_release.namespace, "Available"
        ),
        "the operator's leader alone reporting the ModelVersion Available on /metrics",
        60,
    )
