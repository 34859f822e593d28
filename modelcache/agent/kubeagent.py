"""`modelcache agent --node NAME`: the node reconciler driven by this node's NodeCache.

An adapter around `NodeReconciler` (which owns the policy, as in the standalone agent):
the desired state comes from the NodeCache spec, the reload targets are this node's pods
that the ModelVersion selects, and the report goes to the NodeCache status. Models that
leave the spec are removed from disk (their ModelVersion was deleted, or the node is no
longer selected).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from collections.abc import Iterable
from typing import Any

from urllib3.exceptions import HTTPError

from modelcache.agent.engine import CacheEngine
from modelcache.agent.kube import ApiError, KubeClient, core_path
from modelcache.agent.kubewatch import NodeCacheWatcher, StatusReporter
from modelcache.agent.metrics import AgentMetrics
from modelcache.agent.reconciler import DesiredModel, NodeReconciler, ReloadEndpoint
from modelcache.api import DiskStatus, NodeCacheStatus, NodeModel, PeerStatus
from modelcache.sources import Credentials
from modelcache.store import ModelRef

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0  # after a failed step (API server unreachable), instead of a full resync
SECRET_KEYS = {
    "endpoint": ("OSS_ENDPOINT", "AWS_ENDPOINT_URL"),
    "access_key_id": ("OSS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
    "access_key_secret": ("OSS_ACCESS_KEY_SECRET", "AWS_SECRET_ACCESS_KEY"),
    "session_token": ("OSS_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
}


class KubeAgent:
    """One per node. `run()` blocks until `stop` is set."""

    def __init__(
        self,
        api: KubeClient,
        node: str,
        engine: CacheEngine,
        *,
        resync_seconds: float = 30.0,
        status_interval: float = 0.5,
        metrics: AgentMetrics | None = None,
        peer: PeerStatus | None = None,
    ) -> None:
        self.metrics = metrics
        self.peer = peer  # where this node serves its site's peers, in its status
        self.api = api
        self.node = node
        self.engine = engine
        self.resync_seconds = resync_seconds
        self.stop = threading.Event()
        self._wake = threading.Event()
        self.watcher = NodeCacheWatcher(api, node, self._wake.set, self.stop)
        self.reporter = StatusReporter(
            api, node, self._status, self.stop, min_interval=status_interval
        )
        self.reconciler = NodeReconciler(
            engine,
            reload_targets=self._pods,
            on_change=self.reporter.mark,
            on_pull_end=self._wake.set,
            remove_unlisted=True,
        )
        self._reload_config: dict[str, NodeModel] = {}

    def request_stop(self) -> None:
        """From a signal handler: stop now, not at the next resync."""
        self.stop.set()
        self._wake.set()

    def run(self) -> None:
        self.watcher.start()
        self.reporter.start()
        try:
            self._loop()
        finally:
            self.reconciler.stop_pulls()

    def _loop(self) -> None:
        wait = self.resync_seconds
        while not self.stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self.stop.is_set():
                break
            spec = self.watcher.spec
            if spec is None:
                continue
            wait = self.resync_seconds
            try:
                again = self.reconcile(spec.models)
                if again is not None:
                    wait = min(max(again, 0.1), self.resync_seconds)
            except (ApiError, HTTPError, OSError) as error:
                # e.g. the API server unreachable while listing pods for a reload: stay up
                # (a crash would put the DaemonSet pod in CrashLoopBackOff) and retry soon.
                log.warning("reconcile failed, retrying in %.0fs: %s", RETRY_SECONDS, error)
                wait = min(RETRY_SECONDS, self.resync_seconds)
            self.reporter.mark()

    # -- the step -------------------------------------------------------------------------
    def reconcile(self, models: Iterable[NodeModel]) -> float | None:
        """One step of the node reconciler; returns when it wants the next one (or None)."""
        entries = list(models)
        self._reload_config = {m.key: m for m in entries}
        return self.reconciler.step([self.desired(m) for m in entries])

    def desired(self, entry: NodeModel) -> DesiredModel:
        ref = entry.credentials_secret
        return DesiredModel(
            model=ModelRef(entry.namespace, entry.name),
            source=entry.source,
            active=entry.active,
            versions=tuple(entry.versions),
            retain=entry.retain,
            pins=tuple(entry.pins),
            reload=entry.reload is not None,
            reload_timeout=float(entry.reload.timeout_seconds) if entry.reload else 30.0,
            credentials=(lambda: self._credentials(entry)) if ref is not None else None,
            credentials_ref=(
                f"secret {ref.namespace or entry.namespace}/{ref.name}" if ref is not None else None
            ),
        )

    def _pods(self, desired: DesiredModel) -> list[ReloadEndpoint]:
        """This node's pods that the ModelVersion's reload selector picks, with an IP."""
        entry = self._reload_config.get(desired.key)
        if entry is None or entry.reload is None:
            return []
        selector = entry.reload.pod_selector.to_label_selector_string()
        pods: list[dict[str, Any]] = (
            self.api.list(
                core_path("pods", namespace=entry.namespace),
                labelSelector=selector or None,
                fieldSelector=f"spec.nodeName={self.node}",
            ).get("items")
            or []
        )
        endpoints = []
        for pod in pods:
            name = (pod.get("metadata") or {}).get("name")
            ip = (pod.get("status") or {}).get("podIP")
            if name and ip:
                url = f"http://{ip}:{entry.reload.port}{entry.reload.path}"
                endpoints.append(ReloadEndpoint(name=str(name), url=url))
        return endpoints

    def _credentials(self, entry: NodeModel) -> Credentials | None:
        ref = entry.credentials_secret
        if ref is None:
            return None
        secret = self.api.get(
            core_path("secrets", ref.name, namespace=ref.namespace or entry.namespace)
        )
        data = {k: _decode(v) for k, v in (secret.get("data") or {}).items()}
        values = {
            field_name: next((data[k] for k in keys if k in data), None)
            for field_name, keys in SECRET_KEYS.items()
        }
        # Named in the error that refuses an endpoint carrying credentials (never its value).
        key = next((k for k in SECRET_KEYS["endpoint"] if k in data), "endpoint")
        origin = f"secret {ref.namespace or entry.namespace}/{ref.name} key {key}"
        return Credentials(**values, endpoint_origin=origin)

    # -- status ---------------------------------------------------------------------------
    def _status(self) -> dict[str, Any]:
        spec = self.watcher.spec
        store = self.engine.store
        models = [
            self.reconciler.report(self.desired(entry)) for entry in (spec.models if spec else [])
        ]
        usage = store.usage()
        if self.metrics is not None:  # the same figures for Prometheus (the disk alert)
            self.metrics.record_disk(usage)
        status = NodeCacheStatus(
            models=models,
            disk=DiskStatus(
                total_bytes=usage.total_bytes,
                free_bytes=usage.free_bytes,
                blob_bytes=usage.blob_bytes,
            ),
            peer=self.peer,
            updated_at=_now(),
        )
        return status.to_wire()


def _decode(value: bytes | str) -> str:
    return base64.b64decode(value).decode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
