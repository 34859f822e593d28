"""Acceptance (issue 16), Kubernetes mode on a real API server and SeaweedFS: agent
processes find their site's peers through the NodeCaches, a new version crosses the line
to L3 once, a node that joins the site reads nothing from L3, and a node of another site
is no peer (it reads L3 itself).

L3 bytes come from the line's own counter (every agent reaches SeaweedFS through one
counted delay line); the rest from the NodeCache statuses and the agents' /metrics.
"""

from __future__ import annotations

import base64
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from modelcache.api.k8s import API_VERSION, GROUP, NODE_CACHES, VERSION
from modelcache.fleet import new_token
from modelcache.sources import Credentials, open_source, publish
from modelcache.testing import KubeControlPlane, ObjectStore
from modelcache.testing.delayproxy import DelayProxy
from modelcache.testing.fleet import node_agent
from modelcache.testing.ports import free_port
from modelcache.testing.process import ManagedProcess
from tests.integration.cli.support import make_model
from tests.waiting import wait_for

MIB = 1024 * 1024
FILES = {"unet/weights.safetensors": 16 * MIB, "lora/20.safetensors": 9 * MIB, "config.json": 700}
MODEL_BYTES = sum(FILES.values())
ALLOWANCE = 256 * 1024  # the manifest and HEADs: far below one 4 MiB piece
ZONE = "topology.kubernetes.io/zone"


class Site:
    """Nodes, their NodeCaches and agent processes, all reaching L3 through one line."""

    def __init__(
        self,
        kube: KubeControlPlane,
        core: client.CoreV1Api,
        crds: client.CustomObjectsApi,
        line: DelayProxy,
        work: Path,
        source: str,
        secret: str,
    ) -> None:
        self.kube, self.core, self.crds, self.line = kube, core, crds, line
        self.work, self.source, self.secret = work, source, secret
        self.token = work / "peer-token"
        self.token.write_text(new_token() + "\n")
        self.agents: dict[str, ManagedProcess] = {}
        self.metrics: dict[str, int] = {}
        self.nodes: list[str] = []

    def join(self, zone: str) -> str:
        """A Node in `zone` with its (empty) NodeCache and its agent, once the agent has
        said in its status where its peers reach it: agents run before a rollout."""
        name = f"gpu-{uuid.uuid4().hex[:6]}"
        self.core.create_node({"metadata": {"name": name, "labels": {ZONE: zone}}})
        self.nodes.append(name)
        body = {
            "apiVersion": API_VERSION,
            "kind": "NodeCache",
            "metadata": {"name": name},
            "spec": {"models": []},
        }
        self.crds.create_cluster_custom_object(GROUP, VERSION, NODE_CACHES, body)
        self.metrics[name] = free_port()
        peer = free_port()
        self.agents[name] = node_agent(
            name,
            self.work / name,
            log_path=self.work / f"{name}.log",
            env={"PYTHONUNBUFFERED": "1"},
            kubeconfig=self.kube.kubeconfig,
            metrics_port=self.metrics[name],
            extra=[
                f"--peer-token-file={self.token}",
                "--peer-address=127.0.0.1",
                f"--peer-port={peer}",
                "--max-rate=6M",
            ],
        ).start()
        wait_for(lambda: "peer" in self.status(name), f"{name}'s agent to report its peer URL")
        return name

    def want(self, node: str) -> None:
        """The operator's part: `node` must hold v1 and make it live."""
        model = {
            "namespace": "default",
            "name": "sdxl",
            "source": self.source,
            "versions": ["v1"],
            "active": "v1",
            "credentialsSecret": {"name": self.secret, "namespace": "default"},
        }
        patch = {"spec": {"models": [model]}}
        self.crds.patch_cluster_custom_object(GROUP, VERSION, NODE_CACHES, node, patch)

    def status(self, node: str) -> dict[str, Any]:
        body = self.crds.get_cluster_custom_object(GROUP, VERSION, NODE_CACHES, node)
        return dict(body.get("status") or {})

    def cached(self, node: str) -> bool:
        agent = self.agents[node]
        assert agent.exit_reason() is None, agent.log_tail()
        models = self.status(node).get("models") or []
        return any(v["state"] == "Cached" for m in models for v in m["versions"])

    def pulled(self, node: str) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics[node]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        received = {"l3": 0.0, "peer": 0.0}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "modelcache_pulled_bytes_total":
                    received[sample.labels["source"]] += sample.value
        return received

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for name in self.nodes:
            self.core.delete_node(name)
            self.crds.delete_cluster_custom_object(GROUP, VERSION, NODE_CACHES, name)


@pytest.fixture
def site(
    kube: KubeControlPlane,
    kube_client: Any,
    crds: client.CustomObjectsApi,
    object_store: ObjectStore,
    tmp_path: Path,
) -> Iterator[Site]:
    bucket = f"fan-{uuid.uuid4().hex[:8]}"
    object_store.create_bucket(bucket)
    source = f"s3://{bucket}/sdxl"
    credentials = Credentials(endpoint=object_store.endpoint)
    model = make_model(tmp_path / "src", seed=16, sizes=FILES)
    publish(open_source(source, credentials), model, "v1")
    core = client.CoreV1Api(kube_client)
    with DelayProxy(
        (object_store.host, object_store.port),
        rtt_ms=0,
        log_path=tmp_path / "line.log",
        stats_path=tmp_path / "line.json",
    ) as line:
        secret = f"store-{uuid.uuid4().hex[:6]}"
        values = {
            "AWS_ENDPOINT_URL": line.endpoint,
            "AWS_ACCESS_KEY_ID": "any",
            "AWS_SECRET_ACCESS_KEY": "any",
        }
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        core.create_namespaced_secret("default", {"metadata": {"name": secret}, "data": data})
        made = Site(kube, core, crds, line, tmp_path, source, secret)
        try:
            yield made
        finally:
            made.close()
            core.delete_namespaced_secret(secret, "default")


def test_agents_find_their_site_through_nodecaches_and_l3_serves_each_piece_once(
    site: Site,
) -> None:
    before = site.line.tally().down
    first = [site.join("zone-1"), site.join("zone-1")]
    for node in first:
        site.want(node)
    for node in first:
        wait_for(lambda n=node: site.cached(n), f"{node} to cache v1", timeout=120)
    time.sleep(0.2)  # the line's counter file is written every 0.1 s
    carried = site.line.tally().down - before
    assert MODEL_BYTES <= carried <= MODEL_BYTES + ALLOWANCE, f"{carried:,} bytes over L3"
    for node in first:
        peer = site.status(node)["peer"]
        assert peer["site"] == "zone-1"
        assert peer["url"].startswith("http://127.0.0.1:")
    received = [site.pulled(n) for n in first]
    assert sum(r["peer"] for r in received) >= MODEL_BYTES - 700 - ALLOWANCE, received

    # A node joins zone-1: everything from its neighbours, nothing from L3.
    before = site.line.tally().down
    joined = site.join("zone-1")
    site.want(joined)
    wait_for(lambda: site.cached(joined), "the joining node to cache v1", timeout=120)
    time.sleep(0.2)
    assert site.line.tally().down - before <= ALLOWANCE, "the joining node read L3"
    assert site.pulled(joined) == {"l3": 0.0, "peer": float(MODEL_BYTES)}

    # A node of another site is nobody's peer: it reads the whole model from L3.
    before = site.line.tally().down
    elsewhere = site.join("zone-2")
    site.want(elsewhere)
    wait_for(lambda: site.cached(elsewhere), "the zone-2 node to cache v1", timeout=120)
    time.sleep(0.2)
    assert site.line.tally().down - before >= MODEL_BYTES
    assert site.pulled(elsewhere) == {"l3": float(MODEL_BYTES), "peer": 0.0}
