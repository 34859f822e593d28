"""What `modelcache status` reads from Kubernetes: a ModelVersion and the NodeCaches.

Each answer's size is checked before it is parsed. `follow` polls (about once a second)
and yields a snapshot only when a resourceVersion changed, so a quiet rollout costs two
small GETs a second and prints nothing new.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.api import GROUP, MODEL_VERSIONS, NODE_CACHES, VERSION

MODEL_VERSION_MAX_BYTES = 1 << 20
NODE_CACHES_MAX_BYTES = 64 << 20  # thousands of nodes, a few KiB each


class NotFound(LookupError):  # noqa: N818 - reads as what it is
    """The ModelVersion does not exist (or is gone)."""


@dataclass(frozen=True)
class Snapshot:
    model_version: dict[str, Any]
    node_caches: list[dict[str, Any]]

    @property
    def revision(self) -> tuple[str, ...]:
        """Every object's resourceVersion: equal revisions, equal views."""

        def rv(body: dict[str, Any]) -> str:
            return str((body.get("metadata") or {}).get("resourceVersion", ""))

        return (rv(self.model_version), *sorted(rv(c) for c in self.node_caches))


def capped_json(response: Any, cap: int, what: str) -> dict[str, Any]:
    data: bytes = response.data
    if len(data) > cap:
        raise ValueError(f"{what}: the API server answered {len(data)} bytes, over {cap}")
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"{what}: not a JSON object")
    return body


class RolloutReader:
    """Reads one ModelVersion and every NodeCache through a kubernetes ApiClient."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name

    def read(self) -> Snapshot:
        try:
            response = self.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                MODEL_VERSIONS,
                self.name,
                _preload_content=False,
                _request_timeout=30,
            )
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"ModelVersion {self.namespace}/{self.name} not found") from None
            raise
        body = capped_json(
            response, MODEL_VERSION_MAX_BYTES, f"ModelVersion {self.namespace}/{self.name}"
        )
        listed = self.custom.list_cluster_custom_object(
            GROUP, VERSION, NODE_CACHES, _preload_content=False, _request_timeout=30
        )
        caches = capped_json(listed, NODE_CACHES_MAX_BYTES, "NodeCaches").get("items") or []
        return Snapshot(body, [c for c in caches if isinstance(c, dict)])


def follow(
    read: Callable[[], Snapshot],
    *,
    interval: float = 1.0,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Snapshot]:
    """Snapshots as they change: the first at once, then each new revision (the caller
    stops iterating when the rollout settles). TimeoutError once `deadline` (on `clock`)
    passes."""
    last: tuple[str, ...] | None = None
    while True:
        snapshot = read()
        if snapshot.revision != last:
            last = snapshot.revision
            yield snapshot
        if deadline is not None and clock() >= deadline:
            raise TimeoutError("the deadline passed")
        sleep(interval)
