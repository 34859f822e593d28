"""Start the operator: kopf over the handlers, with peering so one replica of several is active."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.operator.kubeclient import kube_configuration
from modelcache.operator.metrics import OperatorMetrics
from modelcache.operator.tolerations import Toleration
from modelcache.serving import start_metrics_server

log = logging.getLogger(__name__)

PEERING_GROUP = "kopf.dev"
PEERING_PLURAL = "clusterkopfpeerings"


def ensure_peering(api: client.ApiClient, name: str) -> None:
    """kopf needs the peering object to exist before replicas can elect a leader."""
    custom = client.CustomObjectsApi(api)
    body = {
        "apiVersion": f"{PEERING_GROUP}/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": name},
    }
    try:
        custom.create_cluster_custom_object(PEERING_GROUP, "v1", PEERING_PLURAL, body)
    except ApiException as error:
        if error.status != 409:
            raise


def run_operator(
    *,
    kubeconfig: str | os.PathLike[str] | None = None,
    peering: str | None = "modelcache",
    priority: int | None = None,
    peering_lifetime: int = 60,
    liveness: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",  # noqa: S104 - scraped by Prometheus from outside the pod
    agent_tolerations: tuple[Toleration, ...] | None = None,
    agent_node_selector: dict[str, str] | None = None,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Block until stopped. `peering=None` runs standalone (a single replica, no election).

    `priority=None` draws one at random: kopf pauses all replicas that share the highest
    priority, so two replicas started alike (a Deployment) must not tie. `metrics_port`:
    serve Prometheus metrics there (None: none), on the agents' bounded server.
    `agent_tolerations`: the agent DaemonSet's; Nodes whose taints they do not tolerate
    are left out of every rollout (None: no Node is); `agent_node_selector` likewise
    by labels."""
    import modelcache.operator.handlers  # noqa: F401, PLC0415 - registers the handlers

    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)  # kopf's own login reads it too
    if priority is None:
        priority = 1 + secrets.randbelow(2**31 - 1)
    if peering is not None:
        log.info("peering %r, priority %d, lifetime %ds", peering, priority, peering_lifetime)
        with client.ApiClient(kube_configuration(os.environ.get("KUBECONFIG"))) as api:
            ensure_peering(api, peering)
    metrics = OperatorMetrics()
    memo = kopf.Memo(
        kubeconfig=os.environ.get("KUBECONFIG"),
        peering_lifetime=peering_lifetime,
        metrics=metrics,
        agent_tolerations=agent_tolerations,
        agent_node_selector=agent_node_selector,
    )
    server = None
    if metrics_port is not None:
        server = start_metrics_server(metrics_port, metrics_host, metrics.registry)
        log.info("metrics on http://%s:%d/metrics", metrics_host, server.server_port)
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=True,
                standalone=peering is None,
                peering_name=peering,
                priority=priority,
                liveness_endpoint=liveness,
                memo=memo,
                stop_flag=stop,
                ready_flag=ready,
            )
        )
    finally:
        if server is not None:
            server.stop()
