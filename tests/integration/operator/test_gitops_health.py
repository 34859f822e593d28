"""What GitOps tools read from the operator's real ModelVersion status.

kstatus (sigs.k8s.io/cli-utils, as Flux and kpt run it) and the Argo CD health check
(deploy/argocd, run in gopher-lua as Argo CD runs it) are asked about status objects
the reconciler wrote on a real API server: available, rolling out, spec changed but not
yet observed, and a failed rollout flipped back.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client

from modelcache.api.k8s import GROUP, VERSION
from modelcache.operator.reconcile import Reconciler
from modelcache.testing import KubeControlPlane, Toolchain
from modelcache.testing.gitops import argocd_health, argocd_health_of, kstatus
from tests.integration.operator.support import agents_follow, apply_model_version

CHECK_DIR = Path(__file__).parents[3] / "deploy" / "argocd" / "modelcache.io" / "ModelVersion"
HEALTH_LUA = CHECK_DIR / "health.lua"


def _read(crds: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        crds.get_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name),
    )


def _statuses_along_a_rollout(
    kube_client: Any, crds: client.CustomObjectsApi, fleet: list[str], name: str
) -> dict[str, dict[str, Any]]:
    """The ModelVersion as the API server holds it at each stage of two rollouts."""
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
    reconciler.reconcile("default", name)
    stages = {"rolling out": _read(crds, name)}
    for _ in range(6):
        agents_follow(crds, fleet, name)
        reconciler.reconcile("default", name)
    stages["available"] = _read(crds, name)
    crds.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "modelversions", name, {"spec": {"version": "v2"}}
    )
    stages["generation not yet observed"] = _read(crds, name)
    failing = {fleet[1]: "pod refused: rank 16 != slot rank 8"}
    for _ in range(8):
        reconciler.reconcile("default", name)
        agents_follow(crds, fleet, name, fail=failing)
    reconciler.reconcile("default", name)
    stages["failed and reverted"] = _read(crds, name)
    return stages


def test_kstatus_and_argocd_read_the_operators_status(
    kube_client: Any,
    crds: client.CustomObjectsApi,
    fleet: list[str],
    kube: KubeControlPlane,
    toolchain: Toolchain,
) -> None:
    name = f"lora-{uuid.uuid4().hex[:6]}"
    stages = _statuses_along_a_rollout(kube_client, crds, fleet, name)
    assert stages["available"]["status"]["phase"] == "Available"
    assert stages["failed and reverted"]["status"]["phase"] == "Degraded"
    lagging = stages["generation not yet observed"]
    assert lagging["metadata"]["generation"] > lagging["status"]["observedGeneration"]

    expected = {
        "rolling out": ("InProgress", "Progressing"),
        "available": ("Current", "Healthy"),
        "generation not yet observed": ("InProgress", "Progressing"),
        "failed and reverted": ("Failed", "Degraded"),
    }
    seen = {
        stage: (kstatus(obj).status, argocd_health_of(HEALTH_LUA, obj).status)
        for stage, obj in stages.items()
    }
    assert seen == expected
    failed = stages["failed and reverted"]
    assert fleet[1] in kstatus(failed).message
    assert fleet[1] in argocd_health_of(HEALTH_LUA, failed).message
    assert "flipped back to v1" in argocd_health_of(HEALTH_LUA, failed).message


def test_kubectl_wait_for_ready(
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
        },
    )
    reconciler = Reconciler(kube_client)
    for _ in range(6):
        reconciler.reconcile("default", name)
        agents_follow(crds, fleet, name)
    reconciler.reconcile("default", name)
    waited = subprocess.run(
        [str(toolchain.kubectl), "wait", "--for=condition=Ready", f"mv/{name}", "--timeout=60s"],
        env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout


def test_argocd_health_check_cases() -> None:
    """Every case of health_test.yaml, in the format Argo CD's own test runner reads."""
    cases = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())["tests"]
    assert len(cases) >= 4
    for case in cases:
        health = argocd_health(HEALTH_LUA, CHECK_DIR / case["inputPath"])
        got = {"status": health.status, "message": health.message}
        assert got == case["healthStatus"], case["inputPath"]
