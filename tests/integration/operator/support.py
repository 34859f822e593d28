"""Nodes, and agents stood in for by NodeCache status writes, for operator tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubernetes import client

from modelcache.api.k8s import API_VERSION, GROUP, VERSION


def report(
    api: client.CustomObjectsApi,
    node: str,
    model: tuple[str, str],
    *,
    cached: list[str],
    active: str | None,
    reloaded: str | None,
    reload_error: str | None = None,
) -> None:
    """Write NodeCache status as the node's agent would."""
    namespace, name = model
    reloads = []
    if reload_error:
        reloads = [
            {
                "pod": "studio-0",
                "version": active,
                "ok": False,
                "reason": reload_error,
                "at": dt.datetime.now(dt.UTC).isoformat(),
            }
        ]
    status = {
        "models": [
            {
                "namespace": namespace,
                "name": name,
                "active": active,
                "reloadedVersion": reloaded,
                "versions": [{"version": v, "state": "Cached"} for v in cached],
                "reloads": reloads,
            }
        ]
    }
    api.patch_cluster_custom_object_status(GROUP, VERSION, "nodecaches", node, {"status": status})


def entry(api: client.CustomObjectsApi, node: str, name: str) -> dict[str, Any]:
    cache = api.get_cluster_custom_object(GROUP, VERSION, "nodecaches", node)
    (mine,) = [m for m in cache["spec"]["models"] if m["name"] == name]
    return mine


def agents_follow(
    api: client.CustomObjectsApi, nodes: list[str], name: str, *, fail: dict[str, str] | None = None
) -> None:
    """Every agent caches what it is told to hold and serves what it is told to serve."""
    for node in nodes:
        wanted = entry(api, node, name)
        active = wanted.get("active")
        error = (fail or {}).get(node) if active else None
        report(
            api,
            node,
            ("default", name),
            cached=wanted["versions"],
            active=active,
            reloaded=None if error else active,
            reload_error=error,
        )


def apply_model_version(
    api: client.CustomObjectsApi, name: str, spec: dict[str, Any], namespace: str = "default"
) -> None:
    """Create a ModelVersion, as `kubectl apply` of its manifest would."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": spec,
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", body)
