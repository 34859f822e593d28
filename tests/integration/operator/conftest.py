"""Operator test fixtures: a fleet of Node objects per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from modelcache.api.k8s import GROUP, VERSION


@pytest.fixture
def fleet(kube_client: Any, crds: client.CustomObjectsApi) -> Iterator[list[str]]:
    """Four Node objects with a unique label (no kubelet: Nodes are just API objects here)."""
    core = client.CoreV1Api(kube_client)
    pool = uuid.uuid4().hex[:6]
    names = [f"gpu-{pool}-{i}" for i in range(4)]
    for name in names:
        core.create_node({"metadata": {"name": name, "labels": {"pool": pool}}})
    yield names
    for name in names:
        core.delete_node(name)
        with contextlib.suppress(client.exceptions.ApiException):
            crds.delete_cluster_custom_object(GROUP, VERSION, "nodecaches", name)
