"""The chart as rendered with its defaults, with every part on and every value set, and
with fan-out off, CRDs included: every object it renders is accepted by the real API
server (a server-side dry run with modelcache's and the Prometheus Operator's CRDs), each
one accounted for in kubectl's answer, so no kind or value slips past validation."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.testing import KubeControlPlane, Toolchain
from tests.integration.deploy.chart import ALL_ON, Helm, install_monitoring_crds

EVERY_VALUE = (
    *ALL_ON,
    "--set=operator.replicas=3",
    "--set=operator.podDisruptionBudget.maxUnavailable=50%",
    "--set=image.tag=0.1.0",
    "--set=image.pullPolicy=Always",
    "--set-json=agent.nodeSelector=" + json.dumps({"nvidia.com/gpu.present": "true"}),
    "--set-json=agent.tolerations="
    + json.dumps(
        [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}]
    ),
    "--set-json=agent.credentialsSecrets="
    + json.dumps({"studio": ["oss-credentials", "s3-credentials"]}),
    "--set=agent.metricsPort=9500",
    "--set=agent.cacheRoot=/mnt/model-cache",
    "--set-json=agent.extraArgs=" + json.dumps(["--concurrency=8"]),
    "--set=agent.peers.port=9571",
    "--set=agent.peers.existingSecret=fleet-token",
    "--set=agent.peers.siteLabel=example.com/site",
    "--set=monitoring.podMonitor.interval=15s",
    "--set=monitoring.dashboard.namespace=monitoring",
    "--set=monitoring.dashboard.annotations.grafana_folder=modelcache",
)
VARIANTS = {
    "defaults": (),
    "every-value": EVERY_VALUE,
    "no-fan-out": ("--set=agent.peers.enabled=false", "--set=networkPolicy.enabled=true"),
}


@pytest.fixture(scope="module")
def monitoring_crds(kube_client: Any) -> None:
    install_monitoring_crds(kube_client)


def applied_line(item: dict[str, Any]) -> re.Pattern[str]:
    """kubectl's line for one object: `kind[.group]/name serverside-applied (server dry run)`."""
    group = item["apiVersion"].rpartition("/")[0]
    kind = item["kind"].lower() + (f".{re.escape(group)}" if group else "")
    name = re.escape(item["metadata"]["name"])
    return re.compile(rf"^{kind}/{name} serverside-applied \(server dry run\)$", re.M)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_is_accepted_by_the_api_server(
    variant: str,
    toolchain: Toolchain,
    kube: KubeControlPlane,
    kube_client: Any,
    crds: Any,
    monitoring_crds: None,
    tmp_path: Path,
) -> None:
    helm = Helm(toolchain, kube)
    namespace = f"chart-{variant}-{uuid.uuid4().hex[:6]}"
    objects = helm.template("mc", namespace, "--include-crds", *VARIANTS[variant])
    core = client.CoreV1Api(kube_client)
    for name in {namespace, *(o["metadata"].get("namespace", namespace) for o in objects)}:
        try:
            core.create_namespace({"metadata": {"name": name}})
        except ApiException as error:
            if error.status != 409:  # `monitoring`, made by an earlier variant
                raise

    shown = helm.dry_run(namespace, objects, tmp_path)

    kinds = {o["kind"] for o in objects}
    if variant == "every-value":
        assert {"PodMonitor", "PrometheusRule", "NetworkPolicy", "Role"} <= kinds, kinds
    assert "CustomResourceDefinition" in kinds, "--include-crds renders the chart's CRDs"
    missing = [
        f"{o['kind']}/{o['metadata']['name']}" for o in objects if not applied_line(o).search(shown)
    ]
    assert not missing, f"not accepted: {missing}\n{shown}"
    assert len(shown.splitlines()) == len(objects), shown
