"""The chart refuses a value it does not know or of the wrong type, naming it, before it
creates anything; and `helm lint --strict` passes with the defaults and every part on."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.testing import KubeControlPlane, Toolchain
from tests.integration.deploy.chart import ALL_ON, CHART, Helm


@pytest.fixture
def helm(toolchain: Toolchain, kube: KubeControlPlane) -> Helm:
    return Helm(toolchain, kube)


def namespace_exists(kube_client: Any, name: str) -> bool:
    try:
        client.CoreV1Api(kube_client).read_namespace(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("--set=agent.metricsPrt=1", ["/agent", "metricsPrt"]),  # a typo of metricsPort
        ("--set=operator.replicas=two", ["/operator/replicas", "integer"]),
        ("--set=monitring.podMonitor.enabled=true", ["monitring"]),  # a typo at the top
        ("--set=monitoring.podMonitor.enable=true", ["/monitoring/podMonitor", "enable"]),
        ("--set=image.pullPolicy=Sometimes", ["/image/pullPolicy"]),
        ("--set=agent.maxRate=fast", ["/agent/maxRate"]),
        ("--set=monitoring.podMonitor.interval=30", ["/monitoring/podMonitor/interval"]),
    ],
)
def test_helm_install_refuses_a_wrong_value_naming_it_and_creates_nothing(
    helm: Helm, kube_client: Any, value: str, named: list[str]
) -> None:
    release = f"bad{uuid.uuid4().hex[:5]}"
    namespace = f"modelcache-{release}"
    ran = helm.run(
        "install", release, str(CHART), "--namespace", namespace, "--create-namespace", value
    )
    assert ran.returncode != 0, f"helm installed with {value}"
    for part in named:
        assert part in ran.stderr, ran.stderr
    assert len(ran.stderr) < 2000, "one short message, not a dump of the values"
    assert not namespace_exists(kube_client, namespace), "a refused install created nothing"
    listed = helm.run("list", "--all-namespaces", "-o", "json")
    assert release not in [r["name"] for r in json.loads(listed.stdout)]


def test_helm_lint_strict_passes_with_good_values_and_catches_a_wrong_one(helm: Helm) -> None:
    """Clean with the defaults and with every part on; and the same schema check as an
    install, without a cluster (CI can lint a values file)."""
    for values in ((), ALL_ON):
        linted = helm.run("lint", "--strict", str(CHART), *values)
        assert linted.returncode == 0, linted.stdout + linted.stderr
        assert "[WARNING]" not in linted.stdout
        assert "[ERROR]" not in linted.stdout
    linted = helm.run("lint", "--strict", str(CHART), "--set=agent.metricsPrt=1")
    assert linted.returncode != 0
    assert "metricsPrt" in linted.stdout + linted.stderr
