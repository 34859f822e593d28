"""Nodes the agent DaemonSet never runs on are left out of a rollout, on a real API server.

On kind (and kubeadm) the control plane carries `node-role.kubernetes.io/control-plane:
NoSchedule`, which the chart's agent does not tolerate: a rollout that counted it waited
forever. GPU nodes carry `nvidia.com/gpu:NoSchedule`, which it does. The operator is
given the chart's default tolerations, read from values.yaml, as the chart passes them.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.api.k8s import GROUP, VERSION
from modelcache.operator.reconcile import Reconciler
from modelcache.operator.tolerations import parse_tolerations
from modelcache.testing import KubeControlPlane
from modelcache.testing.process import ManagedProcess
from tests.integration.operator.support import agents_follow, apply_model_version
from tests.integration.operator.test_operator_process import (
    eventually,
    has_entry,
    start_operator,
    status_of,
)

VALUES = Path(__file__).resolve().parents[3] / "helm" / "modelcache" / "values.yaml"
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def chart_default_tolerations() -> str:
    """agent.tolerations as values.yaml has it, in JSON as the chart passes it."""
    return json.dumps(yaml.safe_load(VALUES.read_text())["agent"]["tolerations"])


@pytest.fixture
def tainted_fleet(
    kube_client: Any, crds: client.CustomObjectsApi
) -> Iterator[tuple[str, dict[str, str]]]:
    """A pool of three Nodes: a kubeadm control plane, a tainted GPU node, a plain node."""
    core = client.CoreV1Api(kube_client)
    pool = uuid.uuid4().hex[:6]
    nodes = {
        "control-plane": f"cp-{pool}",
        "gpu": f"gpu-{pool}",
        "plain": f"plain-{pool}",
    }
    taints = {"control-plane": [CONTROL_PLANE_TAINT], "gpu": [GPU_TAINT], "plain": []}
    for role, name in nodes.items():
        core.create_node(
            {"metadata": {"name": name, "labels": {"pool": pool}}, "spec": {"taints": taints[role]}}
        )
    yield pool, nodes
    for name in nodes.values():
        core.delete_node(name)
        with contextlib.suppress(ApiException):
            crds.delete_cluster_custom_object(GROUP, VERSION, "nodecaches", name)


def prefetched_message(status: dict[str, Any]) -> str:
    (condition,) = [c for c in status["conditions"] if c["type"] == "Prefetched"]
    message: str = condition["message"]
    return message


def test_the_operator_leaves_out_the_control_plane_and_rolls_out_on_the_others(
    kube: KubeControlPlane,
    kube_client: Any,
    crds: client.CustomObjectsApi,
    tainted_fleet: tuple[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    pool, nodes = tainted_fleet
    operator = start_operator(
        kube,
        tmp_path / "operator.log",
        extra=["--agent-tolerations", chart_default_tolerations()],
    )
    try:
        _roll_out_and_let_the_control_plane_join(kube_client, crds, pool, nodes, operator)
    finally:
        operator.stop()


def _roll_out_and_let_the_control_plane_join(
    kube_client: Any,
    crds: client.CustomObjectsApi,
    pool: str,
    nodes: dict[str, str],
    operator: ManagedProcess,
) -> None:
    name = f"lora-{uuid.uuid4().hex[:6]}"
    apply_model_version(
        crds,
        name,
        {
            "source": {"url": "oss://models/lora"},
            "version": "v1",
            "nodeSelector": {"matchLabels": {"pool": pool}},
        },
    )
    agents = [nodes["gpu"], nodes["plain"]]
    eventually(lambda: all(has_entry(crds, n, name) for n in agents), "entries", operator)

    def available() -> bool:
        agents_follow(crds, agents, name)
        return status_of(crds, name).get("phase") == "Available"

    eventually(available, "phase Available on the nodes that run an agent", operator)
    status = status_of(crds, name)
    assert status["ready"] == "2/2"
    assert not has_entry(crds, nodes["control-plane"], name), "no agent there to act on it"
    assert prefetched_message(status) == (
        f"2/2 nodes hold v1 (1 node left out: the agent does not run there: "
        f"{nodes['control-plane']})"
    )

    # The taint taken off (an admin lets workloads onto the control plane): a Node watch
    # event, and the node joins with the live version like any joining node.
    client.CoreV1Api(kube_client).patch_node(nodes["control-plane"], {"spec": {"taints": None}})
    eventually(lambda: has_entry(crds, nodes["control-plane"], name), "joined", operator)

    def all_three() -> bool:
        agents_follow(crds, list(nodes.values()), name)
        return status_of(crds, name).get("ready") == "3/3"

    eventually(all_three, "READY 3/3", operator)
    assert prefetched_message(status_of(crds, name)) == "3/3 nodes hold v1"

    # Maintenance: a NoSchedule taint put on a node that holds the model does not evict
    # its agent, so the node keeps the model; a NoExecute one does, and the node is left
    # out. The plain node is patched first: the same watch delivers its event first.
    core = client.CoreV1Api(kube_client)
    maintenance = {"key": "example.com/maintenance", "effect": "NoSchedule"}
    core.patch_node(nodes["plain"], {"spec": {"taints": [maintenance]}})
    drain = {"key": "example.com/drain", "effect": "NoExecute"}
    core.patch_node(nodes["gpu"], {"spec": {"taints": [GPU_TAINT, drain]}})
    eventually(lambda: not has_entry(crds, nodes["gpu"], name), "gpu node left out", operator)
    assert has_entry(crds, nodes["plain"], name), "a NoSchedule taint removed a held model"
    eventually(lambda: status_of(crds, name).get("ready") == "2/2", "READY 2/2", operator)


def test_a_one_off_reconcile_listing_nodes_leaves_them_out_alike(
    kube_client: Any, crds: client.CustomObjectsApi, tainted_fleet: tuple[str, dict[str, str]]
) -> None:
    """The Reconciler without the operator's watches (a test, a benchmark) lists Nodes."""
    pool, nodes = tainted_fleet
    name = f"tok-{uuid.uuid4().hex[:6]}"
    apply_model_version(
        crds,
        name,
        {
            "source": {"url": "oss://models/tok"},
            "version": "v1",
            "nodeSelector": {"matchLabels": {"pool": pool}},
        },
    )
    agents = [nodes["gpu"], nodes["plain"]]
    reconciler = Reconciler(
        kube_client, agent_tolerations=parse_tolerations(chart_default_tolerations())
    )
    for _ in range(4):
        reconciler.reconcile("default", name)
        agents_follow(crds, agents, name)
    outcome = reconciler.reconcile("default", name)
    assert outcome.plan is not None
    assert (outcome.plan.phase, sorted(outcome.plan.assignments)) == ("Available", agents)
    assert not has_entry(crds, nodes["control-plane"], name)

    unaware = Reconciler(kube_client)  # no tolerations given: today's behaviour
    unaware.reconcile("default", name)
    assert has_entry(crds, nodes["control-plane"], name), "every selected Node counts"
    assert status_of(crds, name)["ready"] == "2/3"


def test_nodes_the_agents_node_selector_does_not_match_are_left_out(
    kube_client: Any, crds: client.CustomObjectsApi, tainted_fleet: tuple[str, dict[str, str]]
) -> None:
    """The chart's agent.nodeSelector places agents on labelled Nodes only; a ModelVersion
    selecting more counts only those (here: the GPU node; the plain one runs no agent)."""
    pool, nodes = tainted_fleet
    client.CoreV1Api(kube_client).patch_node(
        nodes["gpu"], {"metadata": {"labels": {"accelerator": "gpu"}}}
    )
    name = f"sel-{uuid.uuid4().hex[:6]}"
    apply_model_version(
        crds,
        name,
        {
            "source": {"url": "oss://models/sel"},
            "version": "v1",
            "nodeSelector": {"matchLabels": {"pool": pool}},
        },
    )
    reconciler = Reconciler(
        kube_client,
        agent_tolerations=parse_tolerations(chart_default_tolerations()),
        agent_node_selector={"accelerator": "gpu"},
    )
    for _ in range(4):
        reconciler.reconcile("default", name)
        agents_follow(crds, [nodes["gpu"]], name)
    outcome = reconciler.reconcile("default", name)
    assert outcome.plan is not None
    assert (outcome.plan.phase, sorted(outcome.plan.assignments)) == ("Available", [nodes["gpu"]])
    assert not has_entry(crds, nodes["plain"], name), "no agent there to act on it"
    assert status_of(crds, name)["ready"] == "1/1"
    assert prefetched_message(status_of(crds, name)) == (
        f"1/1 nodes hold v1 (2 nodes left out: the agent does not run there: "
        f"{nodes['control-plane']}, {nodes['plain']})"
    )
