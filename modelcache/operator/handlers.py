"""kopf handlers: the thin layer between Kubernetes watches and the Reconciler.

One daemon per ModelVersion runs reconcile steps: every second after a step that
wrote NodeCaches, every 5 s while a rollout waits on agents, every 30 s once
settled, and at once when a NodeCache it depends on, a Node, or the ModelVersion
itself changes. Deleting a ModelVersion removes it from every
NodeCache first (kopf's finalizer); agents then delete the files.
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.api.k8s import GROUP, MODEL_VERSIONS, NODE_CACHES, VERSION
from modelcache.operator.clusterview import ClusterView, node_is_ready
from modelcache.operator.kubeclient import kube_configuration
from modelcache.operator.metrics import OperatorMetrics
from modelcache.operator.reconcile import WRITE_CONCURRENCY, Reconciler
from modelcache.operator.tolerations import Taint, taints_of
from modelcache.operator.wakeups import (
    NodeSelectionMemory,
    WakeupBoard,
    finish_in_thread,
    sleep_until,
)

FINALIZER = f"{GROUP}/cleanup"
Logger = logging.Logger | logging.LoggerAdapter[Any]
ACTIVE_INTERVAL = 1.0  # after a step that wrote NodeCaches: their agents are acting
# A rollout waiting on agents, Nodes or a wave timeout: their events wake it, the timeout
# is a known deadline; this is only a safety net.
SETTLED_INTERVAL = 30.0


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere, $KUBECONFIG (or ~/.kube/config)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.lifetime = memo.get("peering_lifetime", 60)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    configuration = kube_configuration(memo.get("kubeconfig"))
    configuration.connection_pool_maxsize = WRITE_CONCURRENCY * 2  # reconciles share it
    api = client.ApiClient(configuration)
    memo.reconciler = Reconciler(
        api,
        metrics=memo.get("metrics") or OperatorMetrics(),
        agent_tolerations=memo.get("agent_tolerations"),
        agent_node_selector=memo.get("agent_node_selector"),
    )
    memo.wakeups = WakeupBoard()
    memo.node_selection = NodeSelectionMemory()


@kopf.index(GROUP, VERSION, NODE_CACHES)
def node_caches(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Every NodeCache as last watched; a deep copy, so a snapshot never changes under a thread."""
    return {name: copy.deepcopy(dict(body))}


@kopf.index("", "v1", "nodes")
def node_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    """Every Node's labels: all a ModelVersion's nodeSelector looks at."""
    return {name: dict(labels)}


@kopf.index("", "v1", "nodes")
def node_ready(name: str, status: kopf.Status, **_: Any) -> dict[str, bool]:
    """Every Node's readiness: a NotReady node counts as failed in a rollout in flight."""
    return {name: node_is_ready(status)}


@kopf.index("", "v1", "nodes")
def node_taints(name: str, spec: kopf.Spec, **_: Any) -> dict[str, tuple[Taint, ...]]:
    """Every Node's taints: whether the agent DaemonSet runs there (--agent-tolerations)."""
    return {name: taints_of(spec)}


@kopf.daemon(GROUP, VERSION, MODEL_VERSIONS, cancellation_timeout=10.0)
async def rollout(
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str,
    memo: Any,
    logger: Logger,
    **indexes: Any,
) -> None:
    """Reconcile this ModelVersion until it is deleted (or this operator loses leadership).

    Async on purpose: a waiting daemon holds no thread, so any number of ModelVersions
    share kopf's small worker pool; each reconcile step runs in a thread and returns.
    """
    namespace = namespace or "default"
    reconciler: Reconciler = memo.reconciler
    board: WakeupBoard = memo.wakeups
    wakeup = board.register(namespace, name)
    try:
        while not stopped:
            interval = ACTIVE_INTERVAL
            try:
                async with board.lock(namespace, name):
                    # Snapshot the indexes here, on the loop that updates them.
                    view = ClusterView.from_indexes(
                        indexes["node_caches"],
                        indexes["node_labels"],
                        indexes["node_ready"],
                        indexes["node_taints"],
                    )
                    outcome = await finish_in_thread(
                        partial(reconciler.reconcile, namespace, name, view)
                    )
                if outcome.settled:
                    interval = SETTLED_INTERVAL
                elif outcome.written_nodes == 0:
                    interval = waiting_interval(outcome.deadline_seconds)
            except ApiException as error:
                reconciler.metrics.reconcile_error("api")
                logger.warning("reconcile failed (%s): %s", error.status, error.reason)
            except ValueError as error:  # a spec the models refuse (the CRD schema is looser)
                reconciler.metrics.reconcile_error("invalid_spec")
                logger.error("invalid spec: %s", error)
                interval = SETTLED_INTERVAL
            except Exception:  # kopf logs it and restarts the daemon after a backoff
                reconciler.metrics.reconcile_error("other")
                raise
            await sleep_until(wakeup, interval)
    finally:
        board.unregister(namespace, name)
        # Deleted, or this replica paused (a standby): its phase is not this one's to say.
        reconciler.metrics.forget(f"{namespace}/{name}")


def waiting_interval(deadline_seconds: float | None) -> float:
    """Sleep until the plan's next deadline (just past it), at most SETTLED_INTERVAL."""
    if deadline_seconds is None:
        return SETTLED_INTERVAL
    return min(SETTLED_INTERVAL, max(deadline_seconds + 0.5, ACTIVE_INTERVAL))


@kopf.on.event(GROUP, VERSION, MODEL_VERSIONS)
async def model_version_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    memo.wakeups.wake(namespace or "default", name)


@kopf.on.event(GROUP, VERSION, NODE_CACHES)
async def node_cache_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    for model in (body.get("spec") or {}).get("models") or []:
        memo.wakeups.wake(model.get("namespace", ""), model.get("name", ""))


@kopf.on.event("", "v1", "nodes")
async def node_changed(
    *,
    type: str,
    name: str,
    labels: kopf.Labels,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: Any,
    **_: Any,
) -> None:
    """Wake every ModelVersion only when a Node comes, goes, changes labels, taints or
    readiness: not on the status and heartbeat updates a kubelet makes every few seconds."""
    if type in ("ADDED", "DELETED", "MODIFIED", None) and memo.node_selection.changed(
        type or "ADDED", name, dict(labels), ready=node_is_ready(status), taints=taints_of(spec)
    ):
        memo.wakeups.wake_all()


@kopf.on.delete(GROUP, VERSION, MODEL_VERSIONS)
async def model_version_deleted(
    namespace: str | None, name: str, memo: Any, logger: Logger, **_: Any
) -> None:
    """Forget the model everywhere, after any reconcile step still writing has finished
    (a later step sees the deletion timestamp and writes nothing)."""
    namespace = namespace or "default"
    board: WakeupBoard = memo.wakeups
    async with board.lock(namespace, name):
        removed = await finish_in_thread(partial(memo.reconciler.forget, namespace, name))
    logger.info("removed %s/%s from %d NodeCaches", namespace, name, removed)
