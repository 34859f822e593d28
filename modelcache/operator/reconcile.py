"""One reconcile of one ModelVersion against the cluster: read, plan, write.

Reads the ModelVersion, the Nodes it selects and their NodeCaches; asks the pure
planner what each node must hold and serve; writes NodeCache specs (only this
model's entry, with optimistic concurrency), the ModelVersion status, and Events.
Kept free of kopf so it runs the same from the operator, a test or a benchmark.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.api import (
    API_VERSION,
    GROUP,
    MODEL_VERSION_KIND,
    MODEL_VERSIONS,
    NODE_CACHE_KIND,
    NODE_CACHES,
    VERSION,
    Condition,
    HistoryEntry,
    ModelVersionSpec,
    ModelVersionStatus,
    NodeCacheSpec,
    NodeCacheStatus,
    RolloutState,
)
from modelcache.operator.clusterview import ClusterView, node_is_ready
from modelcache.operator.metrics import OperatorMetrics
from modelcache.operator.nodeview import desired_entry, observations, with_entry, without_entry
from modelcache.operator.planner import Plan, PlanEvent, next_deadline, plan_rollout
from modelcache.operator.tolerations import (
    Toleration,
    daemon_pod_tolerations,
    split_schedulable,
    taints_of,
)

log = logging.getLogger(__name__)

HISTORY_LIMIT = 20
WRITE_CONCURRENCY = 16  # NodeCache writes in flight per reconcile: a 500-node flip is not serial
COMPONENT = "modelcache-operator"

Clock = Callable[[], dt.datetime]
WriteJob = tuple[str, dict[str, Any] | None, Callable[[NodeCacheSpec], NodeCacheSpec]]
"""A node, its NodeCache as last read (None: none yet), and the change to its spec."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Outcome:
    """What a reconcile did; `settled` means nothing will change until something else does."""

    plan: Plan | None
    settled: bool
    written_nodes: int
    # Seconds until time alone changes the plan (a wave timeout); None: only events can.
    deadline_seconds: float | None = None


class Reconciler:
    """Reconciles ModelVersions; one instance per operator process."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        clock: Clock = utcnow,
        metrics: OperatorMetrics | None = None,
        agent_tolerations: tuple[Toleration, ...] | None = None,
        agent_node_selector: Mapping[str, str] | None = None,
    ) -> None:
        """`agent_tolerations`, `agent_node_selector`: the agent DaemonSet's pod template's;
        a selected Node whose taints they do not tolerate, or whose labels the selector
        does not match, runs no agent and is left out (None: none is)."""
        self.agent_selector = agent_node_selector
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.clock = clock
        self.metrics = metrics or OperatorMetrics()
        self.tolerations = (
            None if agent_tolerations is None else daemon_pod_tolerations(agent_tolerations)
        )
        self._writers = ThreadPoolExecutor(WRITE_CONCURRENCY, thread_name_prefix="nodecache-write")
        # NodeCache name -> (resourceVersion, spec, status) as last parsed.
        self._parsed: dict[str, tuple[str, NodeCacheSpec, NodeCacheStatus | None]] = {}

    def _parse(self, cache: dict[str, Any]) -> tuple[NodeCacheSpec, NodeCacheStatus | None]:
        """A NodeCache's spec and status, parsed once per resourceVersion: every rollout
        reads every NodeCache every step, and most steps find nothing changed."""
        meta = cache.get("metadata") or {}
        version = meta.get("resourceVersion")
        known = self._parsed.get(meta.get("name", ""))
        if version is not None and known is not None and known[0] == version:
            return known[1], known[2]
        spec = NodeCacheSpec.model_validate(cache.get("spec") or {})
        status = _status(cache)
        if version is not None:
            self._parsed[meta["name"]] = (version, spec, status)
        return spec, status

    # -- reading --------------------------------------------------------------------------
    def _model_version(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, MODEL_VERSIONS, name
                ),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    def _selected_nodes(
        self, spec: ModelVersionSpec, holding: Collection[str]
    ) -> tuple[list[str], list[str], frozenset[str]]:
        """The selected nodes by name, those the selector matches that no agent runs on
        (their taints; `holding`: see `split_schedulable`), and the nodes not Ready."""
        selector = spec.node_selector.to_label_selector_string()
        nodes = self.core.api_client.sanitize_for_serialization(
            self.core.list_node(label_selector=selector or None)
        )["items"]
        taints = {str(n["metadata"]["name"]): taints_of(n.get("spec")) for n in nodes}
        labels = {str(n["metadata"]["name"]): n["metadata"].get("labels") or {} for n in nodes}
        placement = None if self.agent_selector is None else (self.agent_selector, labels)
        names, left_out = split_schedulable(taints, taints, self.tolerations, holding, placement)
        not_ready = frozenset(
            str(n["metadata"]["name"]) for n in nodes if not node_is_ready(n.get("status"))
        )
        return names, left_out, not_ready

    def _node_caches(self) -> dict[str, dict[str, Any]]:
        listed = cast(
            dict[str, Any], self.custom.list_cluster_custom_object(GROUP, VERSION, NODE_CACHES)
        )
        return {item["metadata"]["name"]: item for item in listed["items"]}

    # -- the step -------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str, view: ClusterView | None = None) -> Outcome:
        """One step. `view`: the Nodes and NodeCaches as the operator's watches hold them
        (None: LIST both from the API server, as a test or a one-off run does)."""
        body = self._model_version(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.metrics.forget(f"{namespace}/{name}")
            return Outcome(None, True, 0)
        spec = ModelVersionSpec.model_validate(body["spec"])
        status = ModelVersionStatus.model_validate(body.get("status") or {})
        caches = self._node_caches() if view is None else dict(view.caches)
        holding = {node for node, cache in caches.items() if _has_entry(cache, namespace, name)}
        if view is None:
            nodes, left_out, not_ready = self._selected_nodes(spec, holding)
        else:
            nodes, left_out = view.schedulable(
                spec.node_selector, self.tolerations, holding, self.agent_selector
            )
            not_ready = view.not_ready
        statuses = {
            node: self._parse(caches[node])[1] if node in caches else None for node in nodes
        }
        now = self.clock()
        plan = plan_rollout(
            spec,
            nodes,
            observations(statuses, namespace, name, not_ready),
            status.rollout,
            history=[h.version for h in status.history],
            now=now,
        )
        jobs: list[WriteJob] = [
            (
                node,
                caches.get(node),
                partial(with_entry, entry=desired_entry(namespace, name, spec, a)),
            )
            for node, a in plan.assignments.items()
        ]
        jobs += [
            (node, cache, partial(without_entry, namespace=namespace, name=name))
            for node, cache in caches.items()
            if node not in plan.assignments and _has_entry(cache, namespace, name)
        ]
        written = self._write_all([job for job in jobs if self._changes(job)])
        new_status = self._status(body, status, plan, now, left_out)
        if new_status != status:  # a waiting rollout re-plans every second, mostly to no change
            self._write_status(namespace, name, new_status)
            # Counted once written: a step whose write failed is redone, not counted twice.
            self.metrics.rollout_step(status.rollout, plan.rollout, now)
        self.metrics.set_phase(f"{namespace}/{name}", plan.phase)
        for event in plan.events:
            self._event(body, event)
        settled = plan.rollout.phase in ("Complete", "Failed") and written == 0
        deadline = next_deadline(spec, plan.rollout, now)
        seconds = None if deadline is None else deadline.total_seconds()
        return Outcome(plan, settled, written, seconds)

    def forget(self, namespace: str, name: str) -> int:
        """Remove this model from every NodeCache (the ModelVersion is being deleted)."""
        change = partial(without_entry, namespace=namespace, name=name)
        return self._write_all(
            [
                (node, cache, change)
                for node, cache in self._node_caches().items()
                if _has_entry(cache, namespace, name)
            ]
        )

    def _changes(self, job: WriteJob) -> bool:
        """Whether the job would change the NodeCache as last seen (skip the thread if not)."""
        _, cache, change = job
        if cache is None:
            return True
        current = self._parse(cache)[0]
        return change(current) != current

    def _write_all(
        self,
        jobs: list[WriteJob],
    ) -> int:
        """Write NodeCaches in parallel: each node's write is independent of the others."""
        futures = [self._writers.submit(self._write_entry, *job) for job in jobs]
        return sum(future.result() for future in futures)

    # -- writing --------------------------------------------------------------------------
    def _write_entry(
        self,
        node: str,
        cache: dict[str, Any] | None,
        change: Callable[[NodeCacheSpec], NodeCacheSpec],
        attempts: int = 5,
    ) -> int:
        """Apply `change` to one NodeCache spec; retry on conflicts. Returns 1 if it wrote."""
        for _ in range(attempts):
            if cache is None:
                spec = change(NodeCacheSpec())
                try:
                    self.custom.create_cluster_custom_object(
                        GROUP,
                        VERSION,
                        NODE_CACHES,
                        {
                            "apiVersion": API_VERSION,
                            "kind": NODE_CACHE_KIND,
                            "metadata": {"name": node},
                            "spec": spec.to_wire(),
                        },
                    )
                    return 1
                except ApiException as error:
                    if error.status != 409:
                        raise
            else:
                current = self._parse(cache)[0]
                wanted = change(current)
                if wanted == current:
                    return 0
                updated = {**cache, "spec": wanted.to_wire()}
                try:
                    self.custom.replace_cluster_custom_object(
                        GROUP, VERSION, NODE_CACHES, node, updated
                    )
                    return 1
                except ApiException as error:
                    if error.status != 409:
                        raise
            cache = self._read_cache(node)
        raise RuntimeError(f"NodeCache {node}: conflicting writes, gave up after {attempts} tries")

    def _read_cache(self, node: str) -> dict[str, Any] | None:
        try:
            body = cast(
                dict[str, Any],
                self.custom.get_cluster_custom_object(GROUP, VERSION, NODE_CACHES, node),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    def _status(
        self,
        body: dict[str, Any],
        old: ModelVersionStatus,
        plan: Plan,
        now: dt.datetime,
        left_out: list[str],
    ) -> ModelVersionStatus:
        rollout = plan.rollout
        history = list(old.history)
        completed = rollout.phase == "Complete" and (
            old.rollout is None
            or old.rollout.phase != "Complete"
            or old.rollout.target != rollout.target
        )
        if completed and (not history or history[-1].version != rollout.target):
            history = [*history, HistoryEntry(version=rollout.target, activated_at=now)][
                -HISTORY_LIMIT:
            ]
        current = rollout.target if rollout.phase == "Complete" else rollout.stable
        conditions = _conditions(
            old.conditions, plan, now, body["metadata"].get("generation"), left_out
        )
        return ModelVersionStatus(
            observed_generation=body["metadata"].get("generation"),
            phase=plan.phase,
            ready=plan.ready,
            current_version=current,
            conditions=conditions,
            versions=list(plan.counts),
            history=history,
            rollout=rollout,
        )

    def _write_status(self, namespace: str, name: str, status: ModelVersionStatus) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            MODEL_VERSIONS,
            name,
            {"status": status.to_wire()},
        )

    def _event(self, body: dict[str, Any], event: PlanEvent) -> None:
        meta = body["metadata"]
        now = self.clock()
        try:
            self.core.create_namespaced_event(
                meta["namespace"],
                client.CoreV1Event(
                    metadata=client.V1ObjectMeta(name=f"{meta['name']}.{uuid.uuid4().hex[:12]}"),
                    involved_object=client.V1ObjectReference(
                        api_version=API_VERSION,
                        kind=MODEL_VERSION_KIND,
                        name=meta["name"],
                        namespace=meta["namespace"],
                        uid=meta["uid"],
                    ),
                    type=event.type,
                    reason=event.reason,
                    message=event.message,
                    source=client.V1EventSource(component=COMPONENT),
                    first_timestamp=now,
                    last_timestamp=now,
                    count=1,
                ),
            )
        except ApiException as error:  # an event is best effort: never fail a reconcile on it
            log.warning("could not post event %s: %s", event.reason, error.reason)


def _status(cache: dict[str, Any] | None) -> NodeCacheStatus | None:
    if cache is None or not cache.get("status"):
        return None
    return NodeCacheStatus.model_validate(cache["status"])


def _has_entry(cache: dict[str, Any], namespace: str, name: str) -> bool:
    models = (cache.get("spec") or {}).get("models") or []
    return any(m.get("namespace") == namespace and m.get("name") == name for m in models)


def _conditions(
    old: list[Condition],
    plan: Plan,
    now: dt.datetime,
    generation: int | None,
    left_out: list[str] | None = None,
) -> list[Condition]:
    """The operator's own conditions, then kstatus' Ready / Reconciling / Stalled (what
    Flux, `kubectl wait --for=condition=Ready` and the Argo CD health check read)."""
    rollout: RolloutState = plan.rollout
    note = left_out_note(left_out or [])
    target_counts = next((c for c in plan.counts if c.version == rollout.target), None)
    cached = target_counts.cached if target_counts else 0
    failures = "; ".join(f"{f.node}: {f.reason}" for f in rollout.failed)
    true_reason = rollout.phase
    wanted: dict[str, tuple[bool, str, str]] = {
        "Prefetched": (
            cached == plan.total and plan.total > 0,
            true_reason,
            f"{cached}/{plan.total} nodes hold {rollout.target}{note}",
        ),
        "Available": (
            plan.phase == "Available",
            true_reason,
            f"{plan.ready} nodes serve {rollout.target}",
        ),
        "Progressing": (
            rollout.phase in ("Prefetching", "Canary", "Waves"),
            true_reason,
            f"rollout of {rollout.target}: {rollout.phase}",
        ),
        "Degraded": (plan.phase == "Degraded", true_reason, failures or "no failures"),
        **_gitops_conditions(plan, failures, note),
    }
    previous = {c.type: c for c in old}
    out = []
    for kind, (true, reason, message) in wanted.items():
        status = "True" if true else "False"
        before = previous.get(kind)
        changed = before is None or before.status != status
        out.append(
            Condition(
                type=kind,
                status=status,
                reason=reason if true else _false_reason(kind, plan),
                message=message,
                last_transition_time=now if changed else before.last_transition_time,  # type: ignore[union-attr]
                observed_generation=generation,
            )
        )
    return out


def left_out_note(left_out: list[str], shown: int = 3) -> str:
    """A short note on the Nodes the selector matched that no agent runs on, naming the
    first few: "" when none."""
    if not left_out:
        return ""
    names = ", ".join(left_out[:shown]) + (", ..." if len(left_out) > shown else "")
    if len(left_out) == 1:
        return f" (1 node left out: the agent does not run there: {names})"
    return f" ({len(left_out)} nodes left out: the agent does not run there: {names})"


def _gitops_conditions(
    plan: Plan, failures: str, note: str = ""
) -> dict[str, tuple[bool, str, str]]:
    """kstatus' conventions: Ready when Available; Stalled when the rollout failed (the
    operator will not get further without a new spec); Reconciling in every other state,
    so no state reads as settled-and-healthy unless it is."""
    rollout = plan.rollout
    serving = f"{plan.ready} nodes serve {rollout.target}"
    stalled = plan.phase == "Degraded"
    if rollout.phase != "Failed":
        stall_reason = "NodesFailed"  # complete within the failure threshold, not everywhere
        stall_message = f"{rollout.target} failed on some nodes: {failures}"
    elif rollout.stable:
        stall_reason = "RolloutReverted"
        stall_message = f"{rollout.target} stopped, flipped back to {rollout.stable}: {failures}"
    else:
        stall_reason = "RolloutFailed"
        stall_message = f"{rollout.target} stopped: {failures}"
    if plan.total == 0:
        reconcile_reason = "NoNodesSelected"
        reconcile_message = (
            f"no node an agent runs on matches nodeSelector{note}"
            if note
            else "no node matches nodeSelector"
        )
    elif rollout.phase in ("Prefetching", "Canary", "Waves"):
        reconcile_reason = rollout.phase
        reconcile_message = f"rollout of {rollout.target}: {rollout.phase}, {serving}"
    else:
        reconcile_reason, reconcile_message = plan.phase, f"waiting for nodes: {serving}"
    reconciling = plan.phase != "Available" and not stalled
    return {
        "Ready": (plan.phase == "Available", "Available", serving),
        "Reconciling": (
            reconciling,
            reconcile_reason,
            reconcile_message if reconciling else serving,
        ),
        "Stalled": (stalled, stall_reason, stall_message if stalled else "no failures"),
    }


def _false_reason(kind: str, plan: Plan) -> str:
    """Ready=False says why in its reason (the phase), as `kubectl wait` users read it."""
    return plan.phase if kind == "Ready" else "AsExpected"
