"""The chart as deployed: real kubelets run the operator and agent images with in-cluster
credentials, and a ModelVersion lands on every node's own disk."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from modelcache.api.k8s import GROUP, VERSION
from modelcache.testing.objectstore import ACCESS_KEY, SECRET_KEY, ObjectStore
from tests.cluster.conftest import CREDENTIALS, Cluster, Release, pods, unique
from tests.integration.cli.support import make_model, same_tree

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"  # kind's own node, tainted: no pods of ours


def eventually(condition: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {what}")
        time.sleep(1)


def test_every_component_reports_the_pinned_release(
    e2e_cluster: Cluster, cluster_api: client.ApiClient
) -> None:
    release = e2e_cluster.kubernetes_version
    assert client.VersionApi(cluster_api).get_code().git_version == release
    nodes = client.CoreV1Api(cluster_api).list_node().items
    workers = [n for n in nodes if CONTROL_PLANE not in (n.metadata.labels or {})]
    assert sorted(n.metadata.name for n in workers) == [n.name for n in e2e_cluster.nodes]
    for node in nodes:
        assert node.status.node_info.kubelet_version == release
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True", node.metadata.name


def test_chart_runs_operator_and_agents_with_in_cluster_credentials(
    e2e_cluster: Cluster, cluster_api: client.ApiClient, modelcache_release: Release
) -> None:
    apps = client.AppsV1Api(cluster_api)
    namespace = modelcache_release.namespace
    operator = apps.read_namespaced_deployment(f"{modelcache_release.name}-operator", namespace)
    assert operator.status.ready_replicas == 2
    agents = apps.read_namespaced_daemon_set(f"{modelcache_release.name}-agent", namespace)
    assert agents.status.number_ready == len(e2e_cluster.nodes)

    agent_pods = pods(cluster_api, namespace, "app.kubernetes.io/component=agent")
    assert sorted(p.spec.node_name for p in agent_pods) == [n.name for n in e2e_cluster.nodes]
    operator_pods = pods(cluster_api, namespace, "app.kubernetes.io/component=operator")
    for pod in agent_pods + operator_pods:
        container = pod.spec.containers[0]
        assert not any(e.name == "KUBECONFIG" for e in container.env or []), pod.metadata.name
        assert container.security_context.read_only_root_filesystem is True
        assert container.security_context.allow_privilege_escalation is False
        assert container.security_context.capabilities.drop == ["ALL"]
    for pod in operator_pods:
        assert pod.spec.security_context.run_as_non_root is True

    # Both replicas logged in with their service account and joined the peering; kopf
    # keeps the replica with the highest priority active and pauses the other.
    peering = client.CustomObjectsApi(cluster_api).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "modelcache"
    )
    peers = eventually(
        lambda: (
            len((peering_now := _peering(cluster_api)).get("status") or {}) == 2 and peering_now
        ),
        "both operator replicas in the peering",
        timeout=60,
    )
    assert peering["metadata"]["name"] == "modelcache"
    priorities = sorted(p["priority"] for p in peers["status"].values())
    assert priorities[0] != priorities[1], "tied priorities would pause both replicas"


def _peering(api: client.ApiClient) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", "modelcache"
        )
    )


def _publish(store: ObjectStore, bucket: str, directory: Path, version: str) -> None:
    env = {
        "AWS_ENDPOINT_URL": store.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "modelcache",
            "publish",
            str(directory),
            f"s3://{bucket}/lora",
            "--version",
            version,
        ],
        env=env,
        check=True,
        capture_output=True,
    )


def test_monitoring_on_creates_the_monitors_the_rules_and_the_dashboard(
    cluster_api: client.ApiClient, modelcache_release: Release
) -> None:
    """With monitoring on, the objects kube-prometheus-stack and Grafana's sidecar pick up
    exist on the cluster: a PodMonitor each for the agents and the operator, the
    PrometheusRule with the case's alert, and the dashboard ConfigMap with its label."""
    custom = client.CustomObjectsApi(cluster_api)
    namespace, name = modelcache_release.namespace, modelcache_release.name
    monitors = custom.list_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "podmonitors"
    )["items"]
    assert sorted(m["metadata"]["name"] for m in monitors) == [f"{name}-agent", f"{name}-operator"]
    rules = custom.list_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "prometheusrules"
    )["items"]
    alerts = {r["alert"] for rule in rules for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"ModelcacheL3ShareHigh", "ModelcacheRolloutDegraded"} <= alerts, alerts
    dashboards = (
        client.CoreV1Api(cluster_api)
        .list_namespaced_config_map(namespace, label_selector="grafana_dashboard=1")
        .items
    )
    assert [d.metadata.name for d in dashboards] == [f"{name}-dashboard"]
    (document,) = dashboards[0].data.values()
    assert json.loads(document)["panels"], "a dashboard without panels"


def test_model_version_lands_on_each_nodes_own_disk(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    cluster_store: ObjectStore,
    modelcache_release: Release,
    studio_namespace: str,
    tmp_path: Path,
) -> None:
    bucket = unique("e2e")
    cluster_store.create_bucket(bucket)
    model = make_model(tmp_path / "v1", seed=1, sizes={"adapter.safetensors": 3 << 20})
    _publish(cluster_store, bucket, model, "v1")

    namespace = studio_namespace
    custom = client.CustomObjectsApi(cluster_api)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modelversions",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelVersion",
            "metadata": {"name": "lora"},
            "spec": {
                "source": {
                    "url": f"s3://{bucket}/lora",
                    "credentialsSecret": {"name": CREDENTIALS},
                },
                "version": "v1",
            },
        },
    )

    def status() -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelversions", "lora"
        )
        return dict(body.get("status") or {})

    want = f"{len(e2e_cluster.nodes)}/{len(e2e_cluster.nodes)}"
    try:
        eventually(lambda: status().get("ready") == want, f"READY {want}", timeout=240)
    except AssertionError:
        print(json.dumps(status(), indent=1))
        raise
    shown = e2e_cluster.kubectl("get", "modelversions", "-n", namespace)
    assert "lora" in shown
    assert want in shown
    for node in e2e_cluster.nodes:
        current = node.hostpath / "models" / namespace / "lora" / "current"
        assert current.is_symlink(), f"{node.name} has no current link"
        assert current.resolve().name == "v1"
        assert same_tree(model, current)
    # Each node pulled into its own directory: the hostPath is not one shared disk.
    inodes = {(n.hostpath / "models").stat().st_ino for n in e2e_cluster.nodes}
    assert len(inodes) == len(e2e_cluster.nodes)

    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", "lora")
    eventually(
        lambda: (
            not any(
                (n.hostpath / "models" / namespace / "lora").exists() for n in e2e_cluster.nodes
            )
        ),
        "the deleted ModelVersion's files gone from every node",
        timeout=120,
    )
