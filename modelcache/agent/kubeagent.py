"""`modelcache agent --node NAME`: the engine driven by this node's NodeCache.

The main loop applies what is cheap and urgent (flips, reload calls) on every
change, so a rollback is never queued behind a download; pulls run in background
threads and wake the loop when done. Models that leave the spec are removed from
disk (their ModelVersion was deleted, or the node is no longer selected).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from urllib3.exceptions import HTTPError

from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import Event
from modelcache.agent.kubeapi import ApiError, KubeClient, core_path
from modelcache.agent.kubewatch import NodeCacheWatcher, StatusReporter
from modelcache.agent.reload import call_reload
from modelcache.api.nodecache import (
    DiskStatus,
    HeldVersion,
    NodeCacheStatus,
    NodeModel,
    NodeModelStatus,
    PodReload,
)
from modelcache.sources.base import Credentials, SourceError
from modelcache.store import ModelRef, StoreError

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0  # after a failed step (API server unreachable), instead of a full resync
SECRET_KEYS = {
    "endpoint": ("OSS_ENDPOINT", "AWS_ENDPOINT_URL"),
    "access_key_id": ("OSS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
    "access_key_secret": ("OSS_ACCESS_KEY_SECRET", "AWS_SECRET_ACCESS_KEY"),
    "session_token": ("OSS_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
}


@dataclass
class _Pull:
    thread: threading.Thread
    total: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class _ModelState:
    failed: dict[str, str] = field(default_factory=dict)  # version -> why
    acked: dict[str, str] = field(default_factory=dict)  # pod -> version it serves
    reloads: list[PodReload] = field(default_factory=list)
    pods: set[str] | None = None  # pods serving the model on this node; None: not looked yet
    last_error: str | None = None

    def reloaded(self, active: str | None, reload_configured: bool) -> str | None:
        """`active` once every pod on this node acknowledged it (no pods: nothing to wait for)."""
        if active is None:
            return None
        if not reload_configured:
            return active
        if self.pods is None:
            return None
        return active if all(self.acked.get(pod) == active for pod in self.pods) else None


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
    ) -> None:
        self.api = api
        self.node = node
        self.engine = engine
        self.resync_seconds = resync_seconds
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pulls: dict[tuple[str, str], _Pull] = {}
        self._models: dict[str, _ModelState] = {}
        self.watcher = NodeCacheWatcher(api, node, self._wake.set, self.stop)
        self.reporter = StatusReporter(
            api, node, self._status, self.stop, min_interval=status_interval
        )

    def request_stop(self) -> None:
        """From a signal handler: stop now, not at the next resync."""
        self.stop.set()
        self._wake.set()

    def run(self) -> None:
        self.watcher.start()
        self.reporter.start()
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
                self.reconcile(spec.models)
            except (ApiError, HTTPError, OSError) as error:
                # e.g. the API server unreachable while listing pods for a reload: stay up
                # (a crash would put the DaemonSet pod in CrashLoopBackOff) and retry soon.
                log.warning("reconcile failed, retrying in %.0fs: %s", RETRY_SECONDS, error)
                wait = min(RETRY_SECONDS, self.resync_seconds)
            self.reporter.mark()

    # -- the step -------------------------------------------------------------------------
    def reconcile(self, models: Iterable[NodeModel]) -> None:
        wanted = {m.key: m for m in models}
        for entry in wanted.values():
            self._reconcile_model(entry)
        self._remove_unwanted(set(wanted))

    def _reconcile_model(self, entry: NodeModel) -> None:
        model = ModelRef(entry.namespace, entry.name)
        state = self._models.setdefault(entry.key, _ModelState())
        store = self.engine.store
        if entry.active and store.has_version(model, entry.active):
            flipped = store.current(model) != entry.active
            if flipped:
                self.engine.flip(model, entry.active)
            try:
                self._reload(model, entry, state)
            finally:  # one status patch says "flipped and reloaded", not two min_interval apart
                if flipped:
                    self.reporter.mark()
        for version in entry.versions:
            if not store.has_version(model, version) and version not in state.failed:
                self._start_pull(model, entry, version)
        busy = any(key[0] == entry.key for key in self._pulls)
        if not busy:
            self.engine.retain(model, entry.retain, protect=entry.versions)

    def _remove_unwanted(self, wanted: set[str]) -> None:
        for model in self.engine.store.models():
            if str(model) not in wanted and not any(k[0] == str(model) for k in self._pulls):
                removed = self.engine.store.remove_model(model)
                self._models.pop(str(model), None)
                log.info("removed %s (%s): no longer in this node's NodeCache", model, removed)
                self.reporter.mark()

    # -- pulls ----------------------------------------------------------------------------
    def _start_pull(self, model: ModelRef, entry: NodeModel, version: str) -> None:
        key = (entry.key, version)
        with self._lock:
            if key in self._pulls:
                return
            # A daemon thread: SIGTERM (a pod deleted, a node drained) ends the agent at once
            # instead of after the download; the partial stays resumable, as after a kill.
            pull = _Pull(
                thread=threading.Thread(
                    target=self._pull, args=(model, entry, version), daemon=True
                )
            )
            self._pulls[key] = pull
        pull.thread.start()

    def _pull(self, model: ModelRef, entry: NodeModel, version: str) -> None:
        key = (entry.key, version)
        state = self._models.setdefault(entry.key, _ModelState())
        progress = _Progress(self, key)
        try:
            self.engine.pull(
                model,
                entry.source,
                version,
                progress=progress,
                credentials=self._credentials(entry),
            )
            state.failed.pop(version, None)
        except (SourceError, StoreError, ApiError, OSError) as error:
            log.warning("pull of %s %s failed: %s", model, version, error)
            state.failed[version] = str(error)
            state.last_error = str(error)
        finally:
            with self._lock:
                self._pulls.pop(key, None)
            self.reporter.mark()
            self._wake.set()

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
        return Credentials(**values)

    # -- reload ---------------------------------------------------------------------------
    def _reload(self, model: ModelRef, entry: NodeModel, state: _ModelState) -> None:
        if entry.reload is None or entry.active is None:
            return
        selector = entry.reload.pod_selector.to_label_selector_string()
        pods: list[dict[str, Any]] = (
            self.api.list(
                core_path("pods", namespace=entry.namespace),
                labelSelector=selector or None,
                fieldSelector=f"spec.nodeName={self.node}",
            ).get("items")
            or []
        )
        for pod in pods:
            name = (pod.get("metadata") or {}).get("name")
            ip = (pod.get("status") or {}).get("podIP")
            if not name or not ip or state.acked.get(name) == entry.active:
                continue
            result = call_reload(
                f"http://{ip}:{entry.reload.port}{entry.reload.path}",
                model=entry.key,
                version=entry.active,
                path=self.engine.store.current_path(model),
                timeout=entry.reload.timeout_seconds,
            )
            self.engine.events.emit(
                Event.RELOAD,
                model=entry.key,
                version=entry.active,
                pod=name,
                ok=result.ok,
                reason=result.reason,
                seconds=round(result.seconds, 3),
            )
            if result.ok:
                state.acked[name] = entry.active
            record = PodReload(
                pod=name, version=entry.active, ok=result.ok, reason=result.reason, at=_now()
            )
            state.reloads = [r for r in state.reloads if r.pod != name] + [record]
            self.reporter.mark()
        live = {str(n) for p in pods if (n := (p.get("metadata") or {}).get("name"))}
        state.acked = {pod: v for pod, v in state.acked.items() if pod in live}
        state.pods = live

    # -- status ---------------------------------------------------------------------------
    def _status(self) -> dict[str, Any]:
        spec = self.watcher.spec
        store = self.engine.store
        models = []
        for entry in spec.models if spec else []:
            model = ModelRef(entry.namespace, entry.name)
            state = self._models.get(entry.key, _ModelState())
            models.append(self._model_status(model, entry, state, store))
        usage = store.usage()
        status = NodeCacheStatus(
            models=models,
            disk=DiskStatus(
                total_bytes=usage.total_bytes,
                free_bytes=usage.free_bytes,
                blob_bytes=usage.blob_bytes,
            ),
            updated_at=_now(),
        )
        return status.to_wire()

    def _model_status(
        self, model: ModelRef, entry: NodeModel, state: _ModelState, store: Any
    ) -> NodeModelStatus:
        held: list[HeldVersion] = []
        rate = None
        for installed in store.versions(model):
            held.append(
                HeldVersion(version=installed.version, state="Cached", bytes=installed.size)
            )
        installed_names = {h.version for h in held}
        for version in entry.versions:
            if version in installed_names:
                continue
            pull = self._pulls.get((entry.key, version))
            if pull is not None:
                elapsed = max(time.monotonic() - pull.started, 1e-3)
                rate = pull.done / elapsed
                held.append(
                    HeldVersion(
                        version=version, state="Pulling", bytes=pull.total, bytes_done=pull.done
                    )
                )
            elif version in state.failed:
                held.append(
                    HeldVersion(version=version, state="Failed", message=state.failed[version])
                )
            else:
                held.append(HeldVersion(version=version, state="Pending"))
        active = store.current(model)
        reloaded = state.reloaded(active, entry.reload is not None)
        return NodeModelStatus(
            namespace=entry.namespace,
            name=entry.name,
            active=active,
            versions=held,
            bytes_per_second=rate,
            last_error=state.last_error,
            reloads=state.reloads,
            reloaded_version=reloaded,
        )


class _Progress:
    """Feeds a pull's byte counts into the status (reported at the reporter's pace)."""

    def __init__(self, agent: KubeAgent, key: tuple[str, str]) -> None:
        self.agent = agent
        self.key = key

    def start(self, model: str, version: str, total_bytes: int, files: int) -> None:
        pull = self.agent._pulls.get(self.key)
        if pull is not None:
            pull.total = total_bytes
        self.agent.reporter.mark()

    def advance(self, nbytes: int) -> None:
        pull = self.agent._pulls.get(self.key)
        if pull is not None:
            pull.done += nbytes
        self.agent.reporter.mark()

    def finish(self) -> None:
        self.agent.reporter.mark()


def _decode(value: bytes | str) -> str:
    return base64.b64decode(value).decode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
