"""Faults on the real cluster: the leading operator deleted mid-rollout, an agent pod deleted
mid-pull, a node's kubelet stopped mid-rollout, a node joining the running cluster.

The chart runs here with a node-wide download cap (agent.maxRate, 8 MB/s) and two parts
in flight, so a 64 MB pull lasts long enough to be interrupted. Everything asserted is
what the cluster and the pods report: ModelVersion status, NodeCaches, Events, the
peering object, each agent's own /metrics, and each node's own disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from modelcache.api.k8s import GROUP, VERSION
from modelcache.sources import Credentials, open_source, publish
from modelcache.testing.e2e import ClusterNode
from modelcache.testing.objectstore import ACCESS_KEY, SECRET_KEY, ObjectStore
from tests.cluster.conftest import CREDENTIALS, Cluster, Release, pod_http, pods, unique
from tests.cluster.test_deploy import eventually
from tests.integration.cli.support import make_model, same_tree

SIZE = 64 << 20  # at 8 MB/s: about 8 s per pull
LONG = 512 << 20  # about 64 s: well past the ~25 s a stopped kubelet takes to show NotReady


class Models:
    """ModelVersions in the studio namespace, each on its own prefix of one bucket."""

    def __init__(
        self, api: client.ApiClient, store: ObjectStore, namespace: str, work: Path
    ) -> None:
        self.api, self.namespace, self.work = api, namespace, work
        self.custom = client.CustomObjectsApi(api)
        self.bucket = unique("faults")
        store.create_bucket(self.bucket)
        self.credentials = Credentials(
            endpoint=store.endpoint, access_key_id=ACCESS_KEY, access_key_secret=SECRET_KEY
        )
        self.made: dict[tuple[str, str], Path] = {}

    def publish(self, name: str, version: str, seed: int, size: int = SIZE) -> Path:
        files = {f"weights-{i}.bin": min(SIZE, size - i * SIZE) for i in range(-(-size // SIZE))}
        directory = make_model(self.work / name / version, seed, files)
        source = open_source(f"s3://{self.bucket}/{name}", self.credentials)
        publish(source, directory, version)
        self.made[(name, version)] = directory
        return directory

    def apply(self, name: str, version: str, **rollout: Any) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            "modelversions",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelVersion",
                "metadata": {"name": name},
                "spec": {
                    "source": {
                        "url": f"s3://{self.bucket}/{name}",
                        "credentialsSecret": {"name": CREDENTIALS},
                    },
                    "version": version,
                    "rollout": {"canary": 1, "maxUnavailable": 1, **rollout},
                },
            },
        )

    def set_version(self, name: str, version: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "modelversions", name, {"spec": {"version": version}}
        )

    def status(self, name: str) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "modelversions", name
        )
        return dict(body.get("status") or {})

    def ready_on(self, name: str, version: str, nodes: int) -> bool:
        status = self.status(name)
        return bool(
            status.get("currentVersion") == version
            and status.get("ready") == f"{nodes}/{nodes}"
            and status.get("phase") == "Available"
        )

    def held(self, node: str, name: str) -> dict[str, Any]:
        """The node's NodeCache status entry for this model ({} before its agent reports)."""
        body = self.custom.get_cluster_custom_object(GROUP, VERSION, "nodecaches", node)
        for model in (body.get("status") or {}).get("models") or []:
            if (model["namespace"], model["name"]) == (self.namespace, name):
                return dict(model)
        return {}

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "modelversions", name
        )

    def serves(self, node: ClusterNode, name: str, version: str) -> bool:
        current = node.hostpath / "models" / self.namespace / name / "current"
        return current.is_symlink() and current.resolve().name == version


@pytest.fixture(scope="module")
def models(
    cluster_api: client.ApiClient,
    cluster_store: ObjectStore,
    modelcache_release: Release,
    studio_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Models]:
    made = Models(cluster_api, cluster_store, studio_namespace, tmp_path_factory.mktemp("faults"))
    yield made
    for name, _ in list(made.made):
        try:
            made.delete(name)
        except client.ApiException as error:
            if error.status != 404:
                raise


def peers(api: client.ApiClient) -> dict[str, dict[str, Any]]:
    body = client.CustomObjectsApi(api).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "modelcache"
    )
    return dict(body.get("status") or {})


def leader_pod(api: client.ApiClient, namespace: str) -> str:
    """The operator pod kopf keeps active: the peer of highest priority (ids name the host)."""
    running = {
        p.metadata.name for p in pods(api, namespace, "app.kubernetes.io/component=operator")
    }
    ranked = sorted(peers(api).items(), key=lambda item: item[1]["priority"], reverse=True)
    for peer_id, _ in ranked:
        host = peer_id.split("@", 1)[-1].split("/", 1)[0]
        if host in running:
            return host
    raise AssertionError(f"no running operator pod among the peers {list(peers(api))}")


def test_the_standby_operator_finishes_a_rollout_when_the_leader_is_deleted(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    modelcache_release: Release,
    models: Models,
) -> None:
    nodes = len(e2e_cluster.nodes)
    models.publish("ha", "v1", seed=11)
    models.publish("ha", "v2", seed=12)
    models.apply("ha", "v1")
    eventually(lambda: models.ready_on("ha", "v1", nodes), "ha READY on v1", 180)

    namespace = modelcache_release.namespace
    leader = leader_pod(cluster_api, namespace)
    models.set_version("ha", "v2")
    eventually(
        lambda: models.status("ha").get("phase") in ("Prefetching", "RollingOut"),
        "the rollout under way",
        30,
    )
    e2e_cluster.kubectl("delete", "pod", "-n", namespace, leader, "--wait=false")
    eventually(
        lambda: models.ready_on("ha", "v2", nodes), "ha READY on v2 after the leader went", 240
    )
    assert all(models.serves(n, "ha", "v2") for n in e2e_cluster.nodes)
    assert not any(leader in peer for peer in peers(cluster_api)), "the deleted leader left"
    assert leader_pod(cluster_api, namespace) != leader
    models.delete("ha")


def test_an_agent_pod_deleted_mid_pull_is_replaced_and_resumes(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    modelcache_release: Release,
    models: Models,
) -> None:
    node = e2e_cluster.nodes[0]
    model = models.publish("resume", "v1", seed=21)
    models.apply("resume", "v1")
    namespace = modelcache_release.namespace
    agent = next(
        p.metadata.name
        for p in pods(cluster_api, namespace, "app.kubernetes.io/component=agent")
        if p.spec.node_name == node.name
    )

    def under_way() -> bool:
        # An eighth in: about 7 s of the pull are left for the pod's deletion to land in.
        versions = models.held(node.name, "resume").get("versions") or []
        return any(v["state"] == "Pulling" and v["bytesDone"] >= SIZE // 8 for v in versions)

    eventually(under_way, f"{node.name} under way with the pull", 120)
    version_dir = node.hostpath / "models" / models.namespace / "resume" / "versions" / "v1"
    assert not version_dir.exists(), "nothing under versions/ before the pull is complete"
    e2e_cluster.kubectl("delete", "pod", "-n", namespace, agent, "--wait=false")

    def replaced_and_done() -> bool:
        partial = version_dir / "weights-0.bin"
        # Never a partial file where a pod could load it.
        assert not partial.exists() or partial.stat().st_size == SIZE
        return models.ready_on("resume", "v1", len(e2e_cluster.nodes))

    eventually(replaced_and_done, "READY after the agent pod was replaced", 180)
    replacement = next(
        p
        for p in pods(cluster_api, namespace, "app.kubernetes.io/component=agent")
        if p.spec.node_name == node.name
    )
    assert replacement.metadata.name != agent
    assert same_tree(model, version_dir), "the resumed pull verified and complete"
    # From L3 or from the other node (fan-out): less than the whole either way.
    received = pulled_bytes(cluster_api, replacement, f"{models.namespace}/resume")
    downloaded = received["l3"] + received["peer"]
    assert 0 < downloaded < SIZE, f"the replacement resumed ({downloaded} of {SIZE} bytes)"
    models.delete("resume")


def pulled_bytes(api: client.ApiClient, agent: Any, model: str) -> dict[str, float]:
    """What the agent pod's own /metrics says it received for `model`, by source: `l3`
    (the object store) and `peer` (the other nodes, fan-out)."""
    text = pod_http(api, agent, 9400, "metrics")
    received = {"l3": 0.0, "peer": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelcache_pulled_bytes_total" and sample.labels["model"] == model:
                received[sample.labels["source"]] += sample.value
    return received


def node_ready(api: client.ApiClient, name: str) -> bool:
    node = client.CoreV1Api(api).read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def test_a_node_whose_kubelet_stops_mid_rollout_counts_as_failed(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    models: Models,
) -> None:
    nodes = e2e_cluster.nodes
    models.publish("kubelet", "v1", seed=31)
    models.publish("kubelet", "v2", seed=32, size=LONG)
    models.apply("kubelet", "v1", failureThreshold=0)
    eventually(lambda: models.ready_on("kubelet", "v1", len(nodes)), "READY on v1", 180)

    models.set_version("kubelet", "v2")  # a prefetch of 512 MB at 8 MB/s per node
    eventually(lambda: models.status("kubelet").get("phase") == "Prefetching", "prefetching", 30)
    silent = nodes[-1]
    # KubeletCluster stops the node's kubelet process; kind cannot, so KindCluster runs
    # `systemctl stop kubelet` inside the node container. Either way the node's pods and
    # containerd keep running and only the API server's view of the node goes stale.
    e2e_cluster.stop_kubelet(silent)
    try:
        eventually(lambda: not node_ready(cluster_api, silent.name), f"{silent.name} NotReady", 90)
        eventually(
            lambda: models.status("kubelet").get("phase") == "Degraded",
            "the rollout stopped as Degraded",
            120,
        )
        status = models.status("kubelet")
        assert [f["node"] for f in status["rollout"]["failed"]] == [silent.name]
        assert "NotReady" in status["rollout"]["failed"][0]["reason"]

        def warned() -> bool:
            # The operator writes the status first and posts its events after it.
            events = client.CoreV1Api(cluster_api).list_namespaced_event(
                models.namespace, field_selector="involvedObject.name=kubelet"
            )
            warnings = [e.message for e in events.items if e.type == "Warning"]
            return any(silent.name in m and "NotReady" in m for m in warnings)

        eventually(warned, f"a Warning event naming {silent.name} NotReady", 30)
        # failureThreshold 0: nobody is left on v2.
        eventually(
            lambda: all(models.serves(n, "kubelet", "v1") for n in nodes), "everyone on v1", 60
        )
    finally:
        e2e_cluster.start_kubelet(silent)
        eventually(lambda: node_ready(cluster_api, silent.name), f"{silent.name} Ready again", 120)
    models.delete("kubelet")


def test_a_node_that_joins_gets_the_live_version(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    modelcache_release: Release,
    models: Models,
) -> None:
    models.publish("join", "v1", seed=41)
    model = models.publish("join", "v2", seed=42)
    models.apply("join", "v1")
    eventually(lambda: models.ready_on("join", "v1", len(e2e_cluster.nodes)), "READY v1", 180)
    models.set_version("join", "v2")
    eventually(lambda: models.ready_on("join", "v2", len(e2e_cluster.nodes)), "READY v2", 180)

    # KubeletCluster starts a new kubelet; kind cannot add a node to a running cluster, so
    # KindCluster starts the worker it made with the cluster and held back (its kubelet
    # stopped, its Node deleted): a Node registers anew either way, with an empty cache.
    joined = e2e_cluster.add_node(studio=False)
    total = len(e2e_cluster.nodes)
    eventually(lambda: models.ready_on("join", "v2", total), f"READY {total}/{total}", 240)
    live = joined.hostpath / "models" / models.namespace / "join" / "current"
    assert models.serves(joined, "join", "v2")
    assert same_tree(model, live)
    agent = next(
        p
        for p in pods(
            cluster_api, modelcache_release.namespace, "app.kubernetes.io/component=agent"
        )
        if p.spec.node_name == joined.name
    )
    # Fan-out: every byte from the nodes that hold v2, none from L3 (issue 16).
    received = pulled_bytes(cluster_api, agent, f"{models.namespace}/join")
    assert received["l3"] == 0, received
    assert received["peer"] >= SIZE, received
    models.delete("join")
