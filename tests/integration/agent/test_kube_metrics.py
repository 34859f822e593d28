"""Kubernetes mode: the agent exports the cache filesystem's figures to Prometheus, as the
standalone agent does (the chart's disk alert and dashboard read them)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from modelcache.testing import KubeControlPlane, ObjectStore
from modelcache.testing.fleet import node_agent
from modelcache.testing.ports import free_port
from tests.integration.agent.test_endpoint_secret import (
    create_secret,
    published_version,
    settled_status,
    want,
)


def gauge(metrics: str, name: str, kind: str) -> float:
    found = re.search(rf'^{name}{{kind="{kind}"}} (\S+)$', metrics, re.MULTILINE)
    assert found, f"no {name}{{kind={kind!r}}} in /metrics"
    return float(found.group(1))


def test_the_kubernetes_agent_exports_its_disk_figures(
    kube: KubeControlPlane,
    kube_client: Any,
    crds: client.CustomObjectsApi,
    object_store: ObjectStore,
    node: str,
    tmp_path: Path,
) -> None:
    url = published_version(object_store, "s3", tmp_path)
    want(
        crds,
        node,
        url,
        create_secret(client.CoreV1Api(kube_client), "AWS_ENDPOINT_URL", object_store.endpoint),
    )
    port = free_port()
    agent = node_agent(
        node,
        tmp_path / "cache",
        log_path=tmp_path / "agent.log",
        env={"PYTHONUNBUFFERED": "1"},
        kubeconfig=kube.kubeconfig,
        metrics_port=port,
    ).start()
    try:
        status = settled_status(crds, node, agent)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
    finally:
        assert agent.stop() == 0
    assert [v["state"] for v in status["models"][0]["versions"]] == ["Cached"]
    total = gauge(metrics, "modelcache_disk_bytes", "total")
    assert 0 < gauge(metrics, "modelcache_disk_bytes", "free") <= total
    assert gauge(metrics, "modelcache_disk_bytes", "blobs") >= 4096, "v1's blob is counted"
    assert status["disk"]["totalBytes"] > 0
