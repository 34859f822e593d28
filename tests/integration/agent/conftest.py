"""A Node object of its own for each test that runs a Kubernetes-mode agent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from modelcache.api.k8s import GROUP, NODE_CACHES, VERSION


@pytest.fixture
def node(kube_client: Any, crds: client.CustomObjectsApi) -> Iterator[str]:
    """A fresh Node; its NodeCache goes with it."""
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_client)
    core.create_node({"metadata": {"name": name}})
    yield name
    core.delete_node(name)
    crds.delete_cluster_custom_object(GROUP, VERSION, NODE_CACHES, name)
