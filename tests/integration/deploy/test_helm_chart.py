"""The Helm chart installs on a real API server, and its RBAC gives the agent only what it needs."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from modelcache.testing import KubeControlPlane, Toolchain
from tests.waiting import wait_for

CHART = Path(__file__).resolve().parents[3] / "helm" / "modelcache"


def can_i(
    kube_client: Any, user: str, verb: str, resource: str, *, group: str = "", subresource: str = ""
) -> bool:
    review = client.AuthorizationV1Api(kube_client).create_subject_access_review(
        {
            "spec": {
                "user": user,
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                },
            }
        }
    )
    return bool(review.status.allowed)


def assert_granted(kube_client: Any, user: str, verb: str, resource: str, **where: str) -> None:
    """Wait for the authorizer to allow it: a fresh install's roles reach its cache shortly
    after the API server stores them."""
    what = f"{user} may {verb} {resource}"
    wait_for(lambda: can_i(kube_client, user, verb, resource, **where), what, 30)


def test_helm_install_creates_the_workloads_and_narrow_rbac(
    kube: KubeControlPlane, toolchain: Toolchain, kube_client: Any, crds: Any
) -> None:
    release = f"mc{uuid.uuid4().hex[:5]}"
    namespace = f"modelcache-{release}"
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "HELM_CACHE_HOME": str(kube.work_dir / "helm"),
    }
    helm = [str(toolchain.helm)]
    subprocess.run(
        [
            *helm,
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--create-namespace",
            "--set-string",
            "agent.nodeSelector.gpu=true",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        listed = json.loads(
            subprocess.run(
                [*helm, "list", "-n", namespace, "-o", "json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        assert [(r["name"], r["status"]) for r in listed] == [(release, "deployed")]

        apps = client.AppsV1Api(kube_client)
        operator = apps.read_namespaced_deployment(f"{release}-operator", namespace)
        assert operator.spec.replicas == 2
        assert operator.spec.template.spec.containers[0].args[0] == "operator"
        agent = apps.read_namespaced_daemon_set(f"{release}-agent", namespace)
        assert agent.spec.template.spec.node_selector == {"gpu": "true"}
        assert agent.spec.template.spec.volumes[0].host_path.path == "/var/lib/modelcache"

        sa = f"system:serviceaccount:{namespace}:{release}-agent"
        assert_granted(kube_client, sa, "watch", "nodecaches", group="modelcache.io")
        assert_granted(
            kube_client, sa, "patch", "nodecaches", group="modelcache.io", subresource="status"
        )
        assert not can_i(kube_client, sa, "update", "nodecaches", group="modelcache.io"), (
            "agents never write spec"
        )
        assert not can_i(kube_client, sa, "list", "modelversions", group="modelcache.io")
        operator_sa = f"system:serviceaccount:{namespace}:{release}-operator"
        assert_granted(kube_client, operator_sa, "update", "nodecaches", group="modelcache.io")
        assert_granted(
            kube_client,
            operator_sa,
            "patch",
            "modelversions",
            group="modelcache.io",
            subresource="status",
        )
        assert not can_i(kube_client, operator_sa, "get", "secrets"), (
            "the operator never reads credentials"
        )
    finally:
        subprocess.run(
            [*helm, "uninstall", release, "-n", namespace],
            env=env,
            check=False,
            capture_output=True,
        )
        client.CoreV1Api(kube_client).delete_namespace(namespace)
