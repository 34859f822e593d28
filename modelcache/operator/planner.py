"""The rollout planner: pure, so every decision is unit-tested without a cluster.

Given what a ModelVersion asks for, which nodes it selects, what each node's
agent reports, and the rollout state remembered in status, it says what each
node must hold and serve next. The steps (DESIGN.md): prefetch the new version
everywhere (no traffic impact), then flip a canary, then waves of at most
`maxUnavailable` nodes, each gated on the agents reporting flip + reload
success. Failures beyond the threshold stop the rollout and flip the flipped
nodes back. Going back to a version that was live before is a rollback: it is
cached everywhere already, so every node flips in one step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from modelcache.api import ModelVersionSpec, NodeFailure, Phase, RolloutState, VersionCount


@dataclass(frozen=True)
class NodeObservation:
    """What a node's agent reports for one model (from NodeCache status)."""

    cached: frozenset[str] = frozenset()
    failed: Mapping[str, str] = field(default_factory=dict)  # version -> why its pull failed
    active: str | None = None  # what `current` points at
    reloaded: str | None = None  # the version every selected pod has acknowledged
    reload_error: str | None = None  # why the last reload of `active` failed
    not_ready: bool = False  # the Node's Ready condition is False or Unknown (kubelet silent)

    def serving(self, version: str) -> bool:
        return self.active == version and self.reloaded == version


@dataclass(frozen=True)
class Assignment:
    """What the operator writes into one node's NodeCache spec for this model."""

    versions: tuple[str, ...]
    active: str | None


@dataclass(frozen=True)
class PlanEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    assignments: dict[str, Assignment]
    rollout: RolloutState
    events: tuple[PlanEvent, ...]
    counts: tuple[VersionCount, ...]
    serving: int
    total: int
    phase: Phase

    @property
    def ready(self) -> str:
        return f"{self.serving}/{self.total}"


def plan_rollout(
    spec: ModelVersionSpec,
    nodes: Sequence[str],
    observed: Mapping[str, NodeObservation],
    state: RolloutState | None,
    *,
    history: Sequence[str] = (),
    now: dt.datetime,
) -> Plan:
    """One reconcile step. `history`: versions that were fully live before, oldest first."""
    selected = sorted(set(nodes))
    events: list[PlanEvent] = []
    state = _retarget(spec.version, state, now, events)
    step = _Step(spec, selected, observed, state, history=history, now=now, events=events)
    state = step.advance()
    assignments = {node: step.assignment(node, state) for node in selected}
    serving = sum(1 for n in selected if step.obs(n).serving(state.target))
    return Plan(
        assignments=assignments,
        rollout=state,
        events=tuple(events),
        counts=_counts(selected, observed, _held(spec, state)),
        serving=serving,
        total=len(selected),
        phase=_phase(state, serving, len(selected)),
    )


def next_deadline(
    spec: ModelVersionSpec, state: RolloutState, now: dt.datetime
) -> dt.timedelta | None:
    """How long until time alone changes the plan (a wave timing out); None: only events
    (a NodeCache report, a Node, the spec) can. A waiting rollout sleeps until then."""
    if state.phase in ("Complete", "Failed") or state.wave_started_at is None:
        return None
    timeout = dt.timedelta(seconds=spec.rollout.wave_timeout_seconds)
    return max(state.wave_started_at + timeout - now, dt.timedelta(0))


def _retarget(
    target: str, state: RolloutState | None, now: dt.datetime, events: list[PlanEvent]
) -> RolloutState:
    if state is not None and state.target == target:
        return state
    stable = None
    if state is not None:
        stable = state.target if state.phase == "Complete" else state.stable
    if state is not None:
        events.append(
            PlanEvent("Normal", "RolloutStarted", f"rolling out {target} (stable: {stable})")
        )
    return RolloutState(target=target, stable=stable, phase="Prefetching", started_at=now)


def _held(spec: ModelVersionSpec, state: RolloutState) -> tuple[str, ...]:
    """Versions every node keeps: the target, the rollback target, and the prefetch list."""
    wanted = [state.target, state.stable, *spec.prefetch]
    return tuple(dict.fromkeys(v for v in wanted if v is not None))


class _Step:
    def __init__(
        self,
        spec: ModelVersionSpec,
        nodes: list[str],
        observed: Mapping[str, NodeObservation],
        state: RolloutState,
        *,
        history: Sequence[str],
        now: dt.datetime,
        events: list[PlanEvent],
    ) -> None:
        self.spec = spec
        self.nodes = nodes
        self.observed = observed
        self.state = state
        self.history = history
        self.now = now
        self.events = events

    def obs(self, node: str) -> NodeObservation:
        return self.observed.get(node, NodeObservation())

    def advance(self) -> RolloutState:
        state = self.state
        if state.phase in ("Prefetching", "Canary", "Waves"):
            state = self._fail_not_ready(state)
            if self._beyond_threshold(state):
                return self._fail(state)
        if state.phase == "Prefetching":
            return self._prefetching(state)
        if state.phase in ("Canary", "Waves"):
            return self._flipping(state)
        return state

    def _fail_not_ready(self, state: RolloutState) -> RolloutState:
        """A node whose kubelet stopped reporting cannot be trusted to finish (or to be
        managed) during a rollout: it counts as failed, against `failureThreshold`."""
        failed = {f.node for f in state.failed}
        new = {
            n: "node NotReady: its kubelet stopped reporting"
            for n in self.nodes
            if self.obs(n).not_ready and n not in failed and not self.obs(n).serving(state.target)
        }
        for node, reason in new.items():
            self.events.append(
                PlanEvent("Warning", "NodeFailed", f"{state.target} on {node}: {reason}")
            )
        if not new:
            return state
        return state.model_copy(update={"failed": _merge_failures(state.failed, new)})

    # -- phases ---------------------------------------------------------------------------
    def _prefetching(self, state: RolloutState) -> RolloutState:
        failed = _merge_failures(
            state.failed,
            {
                n: f"pull of {state.target} failed: {self.obs(n).failed[state.target]}"
                for n in self.nodes
                if state.target in self.obs(n).failed
            },
        )
        state = state.model_copy(update={"failed": failed})
        if self._beyond_threshold(state):
            return self._fail(state)
        failed_nodes = {f.node for f in failed}
        pending = [
            n
            for n in self.nodes
            if n not in failed_nodes and state.target not in self.obs(n).cached
        ]
        if pending or not self.nodes:
            return state
        eligible = self._eligible(state)
        if state.stable is None or self._is_rollback(state):
            self.events.append(
                PlanEvent(
                    "Normal", "Flipping", f"{state.target} cached on every node: flipping all"
                )
            )
            return self._start_wave(state, "Waves", eligible)
        canary = eligible[: min(self.spec.rollout.canary, self._max_unavailable())]
        if not canary:
            return self._next_wave(state.model_copy(update={"phase": "Waves"}))
        self.events.append(
            PlanEvent("Normal", "CanaryStarted", f"{state.target} on canary {', '.join(canary)}")
        )
        return self._start_wave(state, "Canary", canary)

    def _flipping(self, state: RolloutState) -> RolloutState:
        failed_nodes = {f.node for f in state.failed}
        in_flight = [
            n
            for n in state.flipped
            if n not in failed_nodes and not self.obs(n).serving(state.target)
        ]
        new_failures = {n: reason for n in in_flight if (reason := self._failure(n, state))}
        if new_failures:
            state = state.model_copy(update={"failed": _merge_failures(state.failed, new_failures)})
            for node, reason in new_failures.items():
                self.events.append(
                    PlanEvent("Warning", "NodeFailed", f"{state.target} on {node}: {reason}")
                )
            if self._beyond_threshold(state):
                return self._fail(state)
            in_flight = [n for n in in_flight if n not in new_failures]
        if in_flight:
            return state
        if state.phase == "Canary":
            self.events.append(PlanEvent("Normal", "CanaryPassed", f"canary serves {state.target}"))
            state = state.model_copy(update={"phase": "Waves"})
        return self._next_wave(state)

    def _next_wave(self, state: RolloutState) -> RolloutState:
        done = set(state.flipped) | {f.node for f in state.failed}
        remaining = [n for n in self._eligible(state) if n not in done]
        if not remaining:
            failed = ", ".join(f.node for f in state.failed)
            where = f"every node but {failed}" if failed else "every node"
            self.events.append(
                PlanEvent("Normal", "RolloutComplete", f"{state.target} serves on {where}")
            )
            return state.model_copy(update={"phase": "Complete", "wave_started_at": None})
        batch = remaining[: self._max_unavailable()]
        self.events.append(
            PlanEvent("Normal", "WaveStarted", f"wave {state.wave + 1}: {', '.join(batch)}")
        )
        return self._start_wave(state, "Waves", batch)

    def _start_wave(self, state: RolloutState, phase: str, batch: list[str]) -> RolloutState:
        return state.model_copy(
            update={
                "phase": phase,
                "flipped": [*state.flipped, *(n for n in batch if n not in state.flipped)],
                "wave": state.wave + 1,
                "wave_started_at": self.now,
            }
        )

    def _fail(self, state: RolloutState) -> RolloutState:
        reasons = "; ".join(f"{f.node}: {f.reason}" for f in state.failed)
        back = f", flipping back to {state.stable}" if state.stable else ""
        self.events.append(
            PlanEvent("Warning", "RolloutFailed", f"{state.target} stopped{back} ({reasons})")
        )
        return state.model_copy(update={"phase": "Failed", "wave_started_at": None})

    # -- rules ----------------------------------------------------------------------------
    def _failure(self, node: str, state: RolloutState) -> str | None:
        observed = self.obs(node)
        if state.target in observed.failed:
            return f"pull failed: {observed.failed[state.target]}"
        if observed.active == state.target and observed.reload_error:
            return f"reload failed: {observed.reload_error}"
        started = state.wave_started_at
        timeout = dt.timedelta(seconds=self.spec.rollout.wave_timeout_seconds)
        if started is not None and self.now - started > timeout:
            return f"no flip + reload success within {self.spec.rollout.wave_timeout_seconds}s"
        return None

    def _beyond_threshold(self, state: RolloutState) -> bool:
        return len(state.failed) > self.spec.rollout.failure_threshold

    def _max_unavailable(self) -> int:
        return self.spec.rollout.max_unavailable_count(len(self.nodes))

    def _eligible(self, state: RolloutState) -> list[str]:
        failed = {f.node for f in state.failed}
        return [n for n in self.nodes if n not in failed and state.target in self.obs(n).cached]

    def _is_rollback(self, state: RolloutState) -> bool:
        return state.target in self.history

    # -- output ---------------------------------------------------------------------------
    def assignment(self, node: str, state: RolloutState) -> Assignment:
        held = _held(self.spec, state)
        failed = {f.node for f in state.failed}
        if node in failed and state.stable is not None:
            return Assignment(held, state.stable)  # its pods refused the target: keep it off
        if state.phase == "Complete":
            return Assignment(held, state.target)
        if state.phase == "Failed":
            fallback = state.stable or (state.target if node in state.flipped else None)
            return Assignment(held, fallback)
        if node in state.flipped and node not in failed:
            return Assignment(held, state.target)
        return Assignment(held, state.stable)


def _merge_failures(known: Sequence[NodeFailure], new: Mapping[str, str]) -> list[NodeFailure]:
    seen = {f.node for f in known}
    return [*known, *(NodeFailure(node=n, reason=r) for n, r in new.items() if n not in seen)]


def _counts(
    nodes: Sequence[str], observed: Mapping[str, NodeObservation], versions: Sequence[str]
) -> tuple[VersionCount, ...]:
    counts = []
    for version in versions:
        states = [observed.get(n, NodeObservation()) for n in nodes]
        counts.append(
            VersionCount(
                version=version,
                cached=sum(version in s.cached for s in states),
                active=sum(s.serving(version) for s in states),
                failed=sum(
                    version in s.failed or (s.active == version and s.reload_error is not None)
                    for s in states
                ),
            )
        )
    return tuple(counts)


def _phase(state: RolloutState, serving: int, total: int) -> Phase:
    if total == 0:
        return "Pending"
    if state.phase == "Failed":
        return "Degraded"
    if state.phase == "Prefetching":
        return "Prefetching"
    if state.phase == "Complete" and state.failed:
        return "Degraded"  # finished within the failure threshold, but not everywhere
    if state.phase == "Complete" and serving == total:
        return "Available"
    return "RollingOut"
