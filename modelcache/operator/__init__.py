"""The kopf operator: ModelVersion -> NodeCache, over a pure rollout planner.

What it offers (`__all__`): the pure planner and the views it reads (`plan_rollout`,
`ClusterView`, the NodeCache helpers of `nodeview`); the reconciler that reads, plans and
writes (`Reconciler`); `run_operator`, what `modelcache operator` runs;
`rollback_model_version`, what `modelcache rollback -n` does. Module map: planner (pure),
clusterview and nodeview (the cluster as the planner sees it), reconcile (one step against
the API server), handlers (kopf's thin layer, registered by `run_operator`), run, rollback,
wakeups, kubeclient, tolerations (which Nodes the agent DaemonSet runs on).

The names that need the `[operator]` extra (kopf, kubernetes) load on first use, so the
planner imports without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcache.operator.clusterview import ClusterView, node_is_ready
from modelcache.operator.nodeview import (
    desired_entry,
    observation,
    observations,
    with_entry,
    without_entry,
)
from modelcache.operator.planner import (
    Assignment,
    NodeObservation,
    Plan,
    PlanEvent,
    next_deadline,
    plan_rollout,
)
from modelcache.operator.wakeups import NodeSelectionMemory, WakeupBoard

if TYPE_CHECKING:
    from modelcache.operator.kubeclient import kube_configuration
    from modelcache.operator.reconcile import Outcome, Reconciler
    from modelcache.operator.rollback import (
        NoRollbackTarget,
        previous_version,
        rollback_model_version,
    )
    from modelcache.operator.run import run_operator

_ON_FIRST_USE = {
    "kube_configuration": "kubeclient",
    "Outcome": "reconcile",
    "Reconciler": "reconcile",
    "NoRollbackTarget": "rollback",
    "previous_version": "rollback",
    "rollback_model_version": "rollback",
    "run_operator": "run",
}

__all__ = [
    "Assignment",
    "ClusterView",
    "NoRollbackTarget",
    "NodeObservation",
    "NodeSelectionMemory",
    "Outcome",
    "Plan",
    "PlanEvent",
    "Reconciler",
    "WakeupBoard",
    "desired_entry",
    "kube_configuration",
    "next_deadline",
    "node_is_ready",
    "observation",
    "observations",
    "plan_rollout",
    "previous_version",
    "rollback_model_version",
    "run_operator",
    "with_entry",
    "without_entry",
]


def __getattr__(name: str) -> object:
    """The names that need kopf or kubernetes, imported when first asked for."""
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
