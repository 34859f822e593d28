"""Where the operator's API client gets its credentials: the pod's service account in a
cluster, else a kubeconfig file. One rule for kopf's login, peering setup and writes."""

from __future__ import annotations

import os

from kubernetes import client
from kubernetes import config as kube_config


def in_cluster(kubeconfig: str | None) -> bool:
    """In a pod with no kubeconfig named: use the service account the kubelet mounted."""
    return kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ


def kube_configuration(kubeconfig: str | None) -> client.Configuration:
    """A client configuration from the service account in a pod, else from `kubeconfig`
    (None: $KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    if in_cluster(kubeconfig):
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    return configuration
