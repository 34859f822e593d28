"""`modelcache rollback` across a fleet of simulated agents (bench/rollback_fleet.py, small).

The operator process and the real CLI on a real API server; 20 nodes, each a real
`KubeAgent` on a simulated disk (`modelcache.testing.simagents`). No timing: the
rollback must reach Available and every node must end on the target.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelcache.api.k8s import API_VERSION, GROUP, MODEL_VERSIONS, NODE_CACHES, VERSION
from modelcache.store import ModelRef
from modelcache.testing import KubeControlPlane
from modelcache.testing.fleet import modelcache_process
from modelcache.testing.process import ManagedProcess
from modelcache.testing.simagents import SimulatedFleet

NODES = 20
NAMESPACE = "default"


@pytest.fixture
def nodes(kube_client: Any, crds: client.CustomObjectsApi) -> Iterator[list[str]]:
    core = client.CoreV1Api(kube_client)
    pool = uuid.uuid4().hex[:6]
    names = [f"sim-{pool}-{i:02d}" for i in range(NODES)]
    for name in names:
        core.create_node({"metadata": {"name": name, "labels": {"pool": pool}}})
    yield names
    for name in names:
        core.delete_node(name)
        with contextlib.suppress(client.exceptions.ApiException):
            crds.delete_cluster_custom_object(GROUP, VERSION, NODE_CACHES, name)


@pytest.fixture
def operator(kube: KubeControlPlane, crds: Any, tmp_path: Path) -> Iterator[ManagedProcess]:
    process = modelcache_process(
        "operator",
        [
            "operator",
            "--kubeconfig",
            str(kube.kubeconfig),
            "--peering",
            f"test-{uuid.uuid4().hex[:8]}",
        ],
        log_path=tmp_path / "operator.log",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stop_grace=15,
    ).start()
    yield process
    process.stop()


def eventually(condition: Callable[[], bool], what: str, operator: ManagedProcess) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        reason = operator.exit_reason()
        assert reason is None, reason
        assert time.monotonic() < deadline, f"timed out: {what}\n{operator.log_tail(40)}"
        time.sleep(0.2)


def test_rollback_reaches_every_simulated_node(
    kube: KubeControlPlane,
    crds: client.CustomObjectsApi,
    nodes: list[str],
    operator: ManagedProcess,
) -> None:
    name = f"fleet-{uuid.uuid4().hex[:6]}"
    pool = nodes[0].split("-")[1]
    model = ModelRef(NAMESPACE, name)

    def status() -> dict[str, Any]:
        body = crds.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, MODEL_VERSIONS, name)
        return body.get("status") or {}

    def available(version: str) -> bool:
        now = status()
        return now.get("phase") == "Available" and now.get("currentVersion") == version

    def set_version(version: str) -> None:
        crds.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, MODEL_VERSIONS, name, {"spec": {"version": version}}
        )

    with SimulatedFleet(kube.kubeconfig, nodes, status_interval=0.2) as fleet:
        crds.create_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            MODEL_VERSIONS,
            {
                "apiVersion": API_VERSION,
                "kind": "ModelVersion",
                "metadata": {"name": name},
                "spec": {
                    "source": {"url": f"oss://bench/{name}"},
                    "version": "v1",
                    "nodeSelector": {"matchLabels": {"pool": pool}},
                    "rollout": {"canary": 1, "maxUnavailable": "50%"},
                    "reload": {"podSelector": {"matchLabels": {"app": name}}, "port": 9},
                },
            },
        )
        eventually(lambda: available("v1"), "v1 Available", operator)
        set_version("v2")
        eventually(lambda: available("v2"), "v2 Available (canary, then waves)", operator)
        assert all(fleet.current(node, model) == "v2" for node in nodes)

        rolled = subprocess.run(
            [sys.executable, "-m", "modelcache", "rollback", name, "-n", NAMESPACE],
            env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert "v2 -> v1" in rolled.stdout
        eventually(lambda: available("v1"), "the rollback to v1 Available", operator)

        assert {node: fleet.current(node, model) for node in nodes} == dict.fromkeys(nodes, "v1")
        final = status()
        assert final["ready"] == f"{NODES}/{NODES}"
        assert [h["version"] for h in final["history"]] == ["v1", "v2", "v1"]
        for node in nodes:
            cache = crds.get_cluster_custom_object(GROUP, VERSION, NODE_CACHES, node)
            (reported,) = [m for m in cache["status"]["models"] if m["name"] == name]
            assert (reported["active"], reported["reloadedVersion"]) == ("v1", "v1")
            assert {v["version"] for v in reported["versions"]} >= {"v1", "v2"}
        # A rollback flips every node in one step: no node was ever told to serve a third
        # thing, and each simulated node flipped exactly three times (v1, v2, v1).
        assert all(
            [v for _, _, v in fleet.nodes[node].engine.store.flips] == ["v1", "v2", "v1"]
            for node in nodes
        )
