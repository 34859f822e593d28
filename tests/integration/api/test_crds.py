"""The generated CRDs install on a real API server, which then enforces the CEL rules."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.api.k8s import GROUP, VERSION


@pytest.fixture(scope="module")
def model_versions(crds: client.CustomObjectsApi) -> client.CustomObjectsApi:
    return crds


def model_version(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"source": {"url": "oss://models/lora"}, "version": "v2.3.1"}
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelVersion",
        "metadata": {"name": f"lora-{uuid.uuid4().hex[:8]}"},
        "spec": body,
    }


def test_valid_model_version_is_stored_with_defaults(
    model_versions: client.CustomObjectsApi,
) -> None:
    created = model_versions.create_namespaced_custom_object(
        GROUP, VERSION, "default", "modelversions", model_version(rollout={"maxUnavailable": "25%"})
    )
    # Gone again: every later operator in this session would otherwise roll it out.
    model_versions.delete_namespaced_custom_object(
        GROUP, VERSION, "default", "modelversions", created["metadata"]["name"]
    )
    assert created["spec"]["retain"] == 5
    assert created["spec"]["rollout"]["maxUnavailable"] == "25%"
    assert created["spec"]["rollout"]["canary"] == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": {"url": "ftp://host/model"}}, "source.url must start with oss://"),
        ({"retain": 0}, "retain must be at least 1"),
        ({"rollout": {"maxUnavailable": 0}}, "maxUnavailable must be a count >= 1"),
        ({"rollout": {"maxUnavailable": "0%"}}, "maxUnavailable must be a count >= 1"),
        ({"version": "v1/../v2"}, "without '/' or '..'"),
        ({"version": "a..b"}, "without '/' or '..'"),
        (  # a query could carry a token into the status and events
            {"reload": {"podSelector": {"matchLabels": {"app": "x"}}, "path": "/r?token=x"}},
            "spec.reload.path",
        ),
    ],
)
def test_invalid_model_version_is_rejected_with_the_cel_message(
    model_versions: client.CustomObjectsApi, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        model_versions.create_namespaced_custom_object(
            GROUP, VERSION, "default", "modelversions", model_version(**spec)
        )
    assert rejected.value.status == 422
    assert message in json.loads(rejected.value.body)["message"]


def test_node_cache_is_cluster_scoped(model_versions: client.CustomObjectsApi) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeCache",
        "metadata": {"name": f"gpu-{uuid.uuid4().hex[:6]}"},
        "spec": {
            "models": [
                {
                    "namespace": "studio",
                    "name": "lora",
                    "source": "oss://models/lora",
                    "versions": ["v1", "v2"],
                    "active": "v2",
                }
            ]
        },
    }
    created = model_versions.create_cluster_custom_object(GROUP, VERSION, "nodecaches", body)
    assert created["spec"]["models"][0]["retain"] == 5
