"""Least privilege, proven with the pods' own credentials on the real API server.

Each token is read from inside a running pod (the one its kubelet mounted), so it is the
credential an attacker inside that pod would hold: node A's agent cannot write node B's
NodeCache, and reads no Secret but the model credentials the chart lists; the operator
reads no Secret at all. Pods run with the securityContext the docs promise.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import urllib3
from kubernetes import client

from tests.cluster.conftest import (
    CREDENTIALS,
    Cluster,
    Release,
    api_endpoint,
    pods,
)


class PodCredentials:
    """Requests to the API server as a pod: its mounted token, the cluster's CA."""

    def __init__(self, cluster: Cluster, namespace: str, pod: str) -> None:
        self.token = cluster.kubectl(
            "exec",
            "-n",
            namespace,
            pod,
            "--",
            "cat",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ).strip()
        endpoint = api_endpoint(cluster)
        self.base = endpoint.url
        context = ssl.create_default_context(cafile=str(endpoint.ca_file))
        self.http = urllib3.PoolManager(ssl_context=context)

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json"
        return self.http.request(method, self.base + path, body=body, headers=headers)


def nodecache_status(node: str) -> str:
    return f"/apis/modelcache.io/v1alpha1/nodecaches/{node}/status"


def secret(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/secrets" + (f"/{name}" if name else "")


@pytest.fixture(scope="module")
def agent_pods(cluster_api: client.ApiClient, modelcache_release: Release) -> dict[str, str]:
    """node name -> its agent pod's name."""
    listed = pods(cluster_api, modelcache_release.namespace, "app.kubernetes.io/component=agent")
    return {p.spec.node_name: p.metadata.name for p in listed}


def test_an_agent_writes_only_its_own_nodes_nodecache(
    e2e_cluster: Cluster, modelcache_release: Release, agent_pods: dict[str, str]
) -> None:
    node_a, node_b = (n.name for n in e2e_cluster.nodes[:2])
    agent_a = PodCredentials(e2e_cluster, modelcache_release.namespace, agent_pods[node_a])

    own = agent_a.request("PATCH", nodecache_status(node_a), b"{}")
    assert own.status == 200, own.data
    other = agent_a.request("PATCH", nodecache_status(node_b), b"{}")
    assert other.status == 403, other.data
    assert b"only its own node's NodeCache" in other.data
    assert f"bound to node {node_a}".encode() in other.data
    # The agent's service account with a token bound to no pod (no node) writes nothing.
    unbound = PodCredentials.__new__(PodCredentials)
    unbound.base, unbound.http = agent_a.base, agent_a.http
    unbound.token = e2e_cluster.kubectl(
        "create", "token", f"{modelcache_release.name}-agent", "-n", modelcache_release.namespace
    ).strip()
    denied = unbound.request("PATCH", nodecache_status(node_a), b"{}")
    assert denied.status == 403, denied.data
    assert b"bound to node (none)" in denied.data
    # Agents never write spec, create or delete NodeCaches (RBAC).
    spec = f"/apis/modelcache.io/v1alpha1/nodecaches/{node_a}"
    assert agent_a.request("PATCH", spec, b"{}").status == 403
    assert agent_a.request("DELETE", spec).status == 403


def test_an_agent_reads_only_the_listed_model_credentials(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    modelcache_release: Release,
    studio_namespace: str,
    agent_pods: dict[str, str],
) -> None:
    core = client.CoreV1Api(cluster_api)
    core.create_namespaced_secret(
        studio_namespace, {"metadata": {"name": "not-for-agents"}, "string_data": {"k": "v"}}
    )
    agent = PodCredentials(
        e2e_cluster, modelcache_release.namespace, next(iter(agent_pods.values()))
    )
    assert agent.request("GET", secret(studio_namespace, CREDENTIALS)).status == 200
    assert agent.request("GET", secret(studio_namespace, "not-for-agents")).status == 403
    assert agent.request("GET", secret(studio_namespace)).status == 403, "no listing"
    assert agent.request("GET", secret("kube-system")).status == 403
    assert agent.request("GET", secret(modelcache_release.namespace)).status == 403


def test_the_operator_reads_no_secret(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    modelcache_release: Release,
    studio_namespace: str,
) -> None:
    operator_pod = pods(
        cluster_api, modelcache_release.namespace, "app.kubernetes.io/component=operator"
    )[0]
    operator = PodCredentials(e2e_cluster, modelcache_release.namespace, operator_pod.metadata.name)
    assert operator.request("GET", secret(studio_namespace, CREDENTIALS)).status == 403
    assert operator.request("GET", "/api/v1/secrets").status == 403
    # ...while it can do its job: read NodeCaches and ModelVersions.
    assert operator.request("GET", "/apis/modelcache.io/v1alpha1/nodecaches").status == 200


def test_pods_run_as_the_docs_say(
    e2e_cluster: Cluster, modelcache_release: Release, agent_pods: dict[str, str]
) -> None:
    """Seen from inside the running containers, not from the pod spec alone."""
    namespace = modelcache_release.namespace

    def inside(pod: str, script: str) -> str:
        return e2e_cluster.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", script)

    status = "print(open('/proc/self/status').read())"
    agent = inside(next(iter(agent_pods.values())), status)
    assert "\nUid:\t0\t" in agent, "the agent is root on its cache"
    assert "\nCapEff:\t0000000000000000" in agent, "with no capability at all"
    assert "\nNoNewPrivs:\t1" in agent

    operator_pod = e2e_cluster.kubectl(
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/component=operator",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    )
    operator = inside(operator_pod, status)
    assert "\nUid:\t10001\t" in operator
    assert "\nCapEff:\t0000000000000000" in operator

    write_root = "import os\ntry:\n open('/usr/x','w')\nexcept OSError as e:\n print(e.errno)"
    assert inside(operator_pod, write_root).strip() == "30", "EROFS: read-only root"
    assert inside(next(iter(agent_pods.values())), write_root).strip() == "30"
