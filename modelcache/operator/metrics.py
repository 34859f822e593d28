"""The operator's Prometheus metrics: each ModelVersion's phase, rollouts started and ended,
how long they took, and reconcile errors.

Only the leader reconciles, so only it has phase series: kopf stops every daemon of a
paused (standby) replica, and a stopped daemon removes its ModelVersion's series. A
standby exports its counters (zero unless it led before), so sums over replicas stay
right. Rollout transitions are read off the status the step wrote, so a new leader,
which starts from the status its predecessor wrote, counts nothing twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelcache.api import Phase, RolloutState

RolloutResult = Literal["completed", "failed", "reverted", "superseded"]
ReconcileError = Literal["api", "invalid_spec", "other"]
PHASES: tuple[Phase, ...] = get_args(Phase)
ENDED = frozenset({"Complete", "Failed"})
# Rollouts take seconds (a rollback: a flip everywhere) to hours (a large download over
# many waves).
DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)


@dataclass(frozen=True)
class RolloutEnd:
    """A rollout that ended in this step: how, and when it had started."""

    result: RolloutResult
    started_at: dt.datetime | None


@dataclass(frozen=True)
class Transitions:
    """What one reconcile step did to the rollout, from the status before and after it."""

    started: bool
    ended: tuple[RolloutEnd, ...]


def transitions(old: RolloutState | None, new: RolloutState) -> Transitions:
    """A rollout starts when the target changes (or the first time); it ends when it
    reaches Complete or Failed, or when a new target replaces it before that."""
    started = old is None or old.target != new.target
    ended: list[RolloutEnd] = []
    if old is not None and started and old.phase not in ENDED:
        ended.append(RolloutEnd("superseded", old.started_at))
    if new.phase in ENDED and (started or (old is not None and old.phase not in ENDED)):
        ended.append(RolloutEnd(_result(new), new.started_at))
    return Transitions(started, tuple(ended))


def _result(state: RolloutState) -> RolloutResult:
    if state.phase == "Complete":
        return "completed"  # within the failure threshold: failed nodes show as Degraded
    return "reverted" if state.stable else "failed"


class OperatorMetrics:
    """A registry per operator, so tests and several operators in one process do not collide.

    Labels are bounded: `model` ("namespace/name", the agents' label for the same model)
    by the ModelVersions users create, one series per phase each (kube-state-metrics'
    style, so a panel or alert can ask for one phase); the counters and the histogram
    carry only fixed sets of values. Not `namespace`: the scrape adds the pod's own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.phase = Gauge(
            "modelcache_modelversion_phase",
            "1 for the ModelVersion's phase (status.phase), 0 for the other phases.",
            ["model", "phase"],
            registry=r,
        )
        self.started = Counter(
            "modelcache_rollouts_started", "Rollouts started (a new spec.version).", registry=r
        )
        self.ended = Counter(
            "modelcache_rollouts_ended",
            "Rollouts ended: completed, failed, reverted (failed and flipped back), or "
            "superseded by a newer version before they ended.",
            ["result"],
            registry=r,
        )
        self.duration = Histogram(
            "modelcache_rollout_duration_seconds",
            "Seconds from a rollout's start to its end, by result.",
            ["result"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "modelcache_operator_reconcile_errors",
            "Reconcile steps that failed: the API server refused (api), a spec the models "
            "refuse (invalid_spec), anything else (other).",
            ["reason"],
            registry=r,
        )
        # Known label values exported at 0 from the start: increase() sees the first one.
        for result in get_args(RolloutResult):
            self.ended.labels(result)
            self.duration.labels(result)
        for reason in get_args(ReconcileError):
            self.errors.labels(reason)
        self._phases: set[str] = set()

    def set_phase(self, model: str, phase: Phase) -> None:
        """1 for `phase`, 0 for the others: every phase of a model is a series."""
        for each in PHASES:
            self.phase.labels(model, each).set(1 if each == phase else 0)
        self._phases.add(model)

    def forget(self, model: str) -> None:
        """A ModelVersion deleted, or no longer reconciled here (this replica paused)."""
        if model in self._phases:
            self._phases.discard(model)
            for each in PHASES:
                self.phase.remove(model, each)

    def rollout_step(self, old: RolloutState | None, new: RolloutState, now: dt.datetime) -> None:
        """Count what a step that wrote status did to the rollout."""
        step = transitions(old, new)
        if step.started:
            self.started.inc()
        for end in step.ended:
            self.ended.labels(end.result).inc()
            if end.started_at is not None:
                seconds = max((now - end.started_at).total_seconds(), 0.0)
                self.duration.labels(end.result).observe(seconds)

    def reconcile_error(self, reason: ReconcileError) -> None:
        self.errors.labels(reason).inc()
