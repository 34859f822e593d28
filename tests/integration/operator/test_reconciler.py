"""The reconciler on a real API server: NodeCache specs, status, Events, kubectl columns.

Agents are stood in for by writing NodeCache status the way an agent does; the
operator under test only reads it.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any

from kubernetes import client

from modelcache.api.k8s import GROUP, VERSION
from modelcache.operator.reconcile import Reconciler
from modelcache.testing import KubeControlPlane, Toolchain
from tests.integration.operator.support import agents_follow, apply_model_version, entry


def test_apply_rollout_and_failed_rollout(
    kube_client: Any,
    crds: client.CustomObjectsApi,
    fleet: list[str],
    kube: KubeControlPlane,
    toolchain: Toolchain,
) -> None:
    name = f"lora-{uuid.uuid4().hex[:6]}"
    pool = fleet[0].split("-")[1]
    apply_model_version(
        crds,
        name,
        {
            "source": {"url": "oss://models/lora"},
            "version": "v1",
            "nodeSelector": {"matchLabels": {"pool": pool}},
            "rollout": {"canary": 1, "maxUnavailable": 2},
        },
    )
    reconciler = Reconciler(kube_client)
    for _ in range(6):
        reconciler.reconcile("default", name)
        agents_follow(crds, fleet, name)
    outcome = reconciler.reconcile("default", name)
    status = crds.get_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name)[
        "status"
    ]
    assert (status["phase"], status["ready"], status["currentVersion"]) == (
        "Available",
        "4/4",
        "v1",
    )
    assert outcome.settled
    assert [h["version"] for h in status["history"]] == ["v1"]

    columns = subprocess.run(
        [str(toolchain.kubectl), "get", "mv", name, "--no-headers"],
        env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert columns[:4] == [name, "v1", "4/4", "Available"]

    crds.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "modelversions", name, {"spec": {"version": "v2"}}
    )
    failing = {fleet[1]: "pod refused: rank 16 != slot rank 8"}
    for _ in range(8):
        reconciler.reconcile("default", name)
        agents_follow(crds, fleet, name, fail=failing)
    reconciler.reconcile("default", name)
    status = crds.get_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name)[
        "status"
    ]
    assert status["phase"] == "Degraded"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert fleet[1] in degraded["message"]
    assert all(entry(crds, n, name)["active"] == "v1" for n in fleet), "flipped nodes went back"

    events = (
        client.CoreV1Api(kube_client)
        .list_namespaced_event("default", field_selector=f"involvedObject.name={name}")
        .items
    )
    warnings = [e for e in events if e.type == "Warning" and e.reason == "RolloutFailed"]
    assert warnings
    assert fleet[1] in warnings[0].message
    assert "rank 16" in warnings[0].message


def test_deleting_forgets_the_model_everywhere(
    kube_client: Any, crds: client.CustomObjectsApi, fleet: list[str]
) -> None:
    name = f"vae-{uuid.uuid4().hex[:6]}"
    pool = fleet[0].split("-")[1]
    apply_model_version(
        crds,
        name,
        {
            "source": {"url": "s3://models/vae"},
            "version": "v1",
            "nodeSelector": {"matchLabels": {"pool": pool}},
        },
    )
    reconciler = Reconciler(kube_client)
    reconciler.reconcile("default", name)
    assert entry(crds, fleet[0], name)["versions"] == ["v1"]
    assert reconciler.forget("default", name) == 4
    for node in fleet:
        cache = crds.get_cluster_custom_object(GROUP, VERSION, "nodecaches", node)
        assert all(m["name"] != name for m in cache["spec"].get("models", []))


def test_joining_node_gets_the_live_version_and_a_leaving_node_is_forgotten(
    kube_client: Any, crds: client.CustomObjectsApi, fleet: list[str]
) -> None:
    core = client.CoreV1Api(kube_client)
    name = f"tok-{uuid.uuid4().hex[:6]}"
    pool = fleet[0].split("-")[1]
    members, newcomer = fleet[:3], fleet[3]
    core.patch_node(newcomer, {"metadata": {"labels": {"pool": "elsewhere"}}})
    apply_model_version(
        crds,
        name,
        {
            "source": {"url": "oss://models/tok"},
            "version": "v1",
            "nodeSelector": {"matchLabels": {"pool": pool}},
        },
    )
    reconciler = Reconciler(kube_client)
    for _ in range(4):
        reconciler.reconcile("default", name)
        agents_follow(crds, members, name)
    assert reconciler.reconcile("default", name).plan.phase == "Available"

    core.patch_node(newcomer, {"metadata": {"labels": {"pool": pool}}})
    reconciler.reconcile("default", name)
    assert entry(crds, newcomer, name)["active"] == "v1", "a joining node serves the live version"

    core.patch_node(members[0], {"metadata": {"labels": {"pool": "elsewhere"}}})
    reconciler.reconcile("default", name)
    cache = crds.get_cluster_custom_object(GROUP, VERSION, "nodecaches", members[0])
    assert all(m["name"] != name for m in cache["spec"]["models"]), "a leaving node forgets it"
