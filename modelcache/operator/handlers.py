"""kopf handlers: the thin layer between Kubernetes watches and the Reconciler.

One daemon per ModelVersion runs reconcile steps: quickly while a rollout is in
flight, rarely once settled, and at once when a NodeCache it depends on, a Node,
or the ModelVersion itself changes. Deleting a ModelVersion removes it from every
NodeCache first (kopf's finalizer); agents then delete the files.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from modelcache.api.k8s import GROUP, VERSION
from modelcache.operator.reconcile import Reconciler
from modelcache.operator.wakeups import WakeupBoard, sleep_until

FINALIZER = f"{GROUP}/cleanup"
Logger = logging.Logger | logging.LoggerAdapter[Any]
ACTIVE_INTERVAL = 1.0
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
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    api = kube_config.new_client_from_config(config_file=memo.get("kubeconfig"))  # type: ignore[no-untyped-call]
    memo.reconciler = Reconciler(api)
    memo.wakeups = WakeupBoard()


@kopf.daemon(GROUP, VERSION, "modelversions", cancellation_timeout=10.0)
def rollout(
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str,
    memo: Any,
    logger: Logger,
    **_: Any,
) -> None:
    """Reconcile this ModelVersion until it is deleted (or this operator loses leadership)."""
    namespace = namespace or "default"
    reconciler: Reconciler = memo.reconciler
    board: WakeupBoard = memo.wakeups
    wakeup = board.register(namespace, name)
    try:
        while not stopped:
            interval = ACTIVE_INTERVAL
            try:
                outcome = reconciler.reconcile(namespace, name)
                if outcome.settled:
                    interval = SETTLED_INTERVAL
            except ApiException as error:
                logger.warning("reconcile failed (%s): %s", error.status, error.reason)
            except ValueError as error:  # a spec the models refuse (the CRD schema is looser)
                logger.error("invalid spec: %s", error)
                interval = SETTLED_INTERVAL
            sleep_until(wakeup, interval, lambda: bool(stopped))
    finally:
        board.unregister(namespace, name)


@kopf.on.event(GROUP, VERSION, "modelversions")
def model_version_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    memo.wakeups.wake(namespace or "default", name)


@kopf.on.event(GROUP, VERSION, "nodecaches")
def node_cache_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    for model in (body.get("spec") or {}).get("models") or []:
        memo.wakeups.wake(model.get("namespace", ""), model.get("name", ""))


@kopf.on.event("", "v1", "nodes")
def node_changed(type: str, memo: Any, **_: Any) -> None:
    if type in ("ADDED", "DELETED", "MODIFIED"):
        memo.wakeups.wake_all()


@kopf.on.delete(GROUP, VERSION, "modelversions")
def model_version_deleted(
    namespace: str | None, name: str, memo: Any, logger: Logger, **_: Any
) -> None:
    removed = memo.reconciler.forget(namespace or "default", name)
    logger.info("removed %s/%s from %d NodeCaches", namespace, name, removed)
