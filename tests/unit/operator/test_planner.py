"""The rollout planner's promises, checked over simulated fleets.

The fleet below is a pure state machine standing in for agents (pull, flip,
reload), so every step of a rollout can be inspected; the real agents are
exercised by the integration tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.api.modelversion import ModelVersionSpec, RolloutState
from modelcache.operator.planner import NodeObservation, Plan, next_deadline, plan_rollout

T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def spec(version: str, **rollout: object) -> ModelVersionSpec:
    return ModelVersionSpec.model_validate(
        {"source": {"url": "oss://models/lora"}, "version": version, "rollout": rollout}
    )


@dataclass
class Fleet:
    """Agents that do what their assignment says, one step later; some fail on purpose."""

    nodes: list[str]
    cached: dict[str, set[str]] = field(default_factory=dict)
    active: dict[str, str | None] = field(default_factory=dict)
    reloaded: dict[str, str | None] = field(default_factory=dict)
    reload_fails: set[tuple[str, str]] = field(default_factory=set)  # (node, version)
    pull_fails: set[tuple[str, str]] = field(default_factory=set)
    not_ready: set[str] = field(default_factory=set)  # kubelet stopped: the agent is silent

    def observe(self) -> dict[str, NodeObservation]:
        out = {}
        for node in self.nodes:
            active = self.active.get(node)
            failing = (node, active) in self.reload_fails if active else False
            out[node] = NodeObservation(
                cached=frozenset(self.cached.get(node, set())),
                failed={v: "disk error" for (n, v) in self.pull_fails if n == node},
                active=active,
                reloaded=None if failing else self.reloaded.get(node),
                reload_error="pod refused: shape mismatch" if failing else None,
                not_ready=node in self.not_ready,
            )
        return out

    def apply(self, plan: Plan) -> None:
        for node, assignment in plan.assignments.items():
            if node in self.not_ready:
                continue
            for version in assignment.versions:
                if (node, version) not in self.pull_fails:
                    self.cached.setdefault(node, set()).add(version)
            if assignment.active is not None and assignment.active in self.cached.get(node, set()):
                self.active[node] = assignment.active
                if (node, assignment.active) not in self.reload_fails:
                    self.reloaded[node] = assignment.active


def run(
    fleet: Fleet,
    mv: ModelVersionSpec,
    state: RolloutState | None = None,
    history: tuple[str, ...] = (),
    max_steps: int = 200,
) -> tuple[list[Plan], RolloutState]:
    plans: list[Plan] = []
    now = T0
    for _ in range(max_steps):
        plan = plan_rollout(mv, fleet.nodes, fleet.observe(), state, history=history, now=now)
        plans.append(plan)
        state = plan.rollout
        if state.phase in ("Complete", "Failed") and plans[-1].assignments == (
            plans[-2].assignments if len(plans) > 1 else None
        ):
            break
        fleet.apply(plan)
        now += dt.timedelta(seconds=1)
    assert state is not None
    return plans, state


def deployed(nodes: int, version: str = "v1") -> tuple[Fleet, RolloutState]:
    fleet = Fleet([f"gpu-{i:02d}" for i in range(nodes)])
    _, state = run(fleet, spec(version))
    assert state.phase == "Complete"
    return fleet, state


def in_flight(plan: Plan, fleet_view: dict[str, NodeObservation], target: str) -> int:
    return sum(
        1
        for node, a in plan.assignments.items()
        if a.active == target and not fleet_view[node].serving(target)
    )


def test_first_deploy_serves_everywhere() -> None:
    fleet, state = deployed(6)
    assert all(fleet.active[n] == "v1" and fleet.reloaded[n] == "v1" for n in fleet.nodes)
    assert state.stable is None


def test_new_version_prefetches_everywhere_before_the_canary_flips() -> None:
    fleet, state = deployed(6)
    plans, final = run(fleet, spec("v2", canary=1, maxUnavailable=2), state)
    first_flip = next(
        i for i, p in enumerate(plans) if any(a.active == "v2" for a in p.assignments.values())
    )
    assert all("v2" in a.versions for a in plans[0].assignments.values()), "prefetch first"
    flipped = [n for n, a in plans[first_flip].assignments.items() if a.active == "v2"]
    assert flipped == ["gpu-00"], "exactly the canary"
    assert final.phase == "Complete"
    assert plans[-1].ready == "6/6"
    assert plans[-1].phase == "Available"


def test_failed_reload_stops_and_flips_back() -> None:
    fleet, state = deployed(6)
    fleet.reload_fails.add(("gpu-02", "v2"))
    plans, final = run(fleet, spec("v2", canary=1, maxUnavailable=2), state)
    assert final.phase == "Failed"
    assert [f.node for f in final.failed] == ["gpu-02"]
    assert all(a.active == "v1" for a in plans[-1].assignments.values()), "everyone back on v1"
    warnings = [e for p in plans for e in p.events if e.type == "Warning"]
    assert any("gpu-02" in e.message and "shape mismatch" in e.message for e in warnings)
    assert plans[-1].phase == "Degraded"


def test_rollback_to_a_previous_version_flips_everyone_at_once() -> None:
    fleet, state = deployed(6)
    _, state = run(fleet, spec("v2", canary=1, maxUnavailable=1), state)
    plans, final = run(fleet, spec("v1", canary=1, maxUnavailable=1), state, history=("v1", "v2"))
    assert final.phase == "Complete"
    first = plans[0]
    assert all(a.active == "v1" for a in first.assignments.values()), "one step, no waves"


def test_a_node_joining_after_completion_gets_the_live_version() -> None:
    fleet, state = deployed(3)
    fleet.nodes.append("gpu-99")
    plan = plan_rollout(spec("v1"), fleet.nodes, fleet.observe(), state, now=T0)
    assert plan.assignments["gpu-99"].active == "v1"
    assert plan.ready == "3/4"


def test_wave_timeout_counts_as_a_failure() -> None:
    fleet, state = deployed(2)
    mv = spec("v2", canary=1, maxUnavailable=1, waveTimeoutSeconds=30)
    plan = plan_rollout(mv, fleet.nodes, fleet.observe(), state, now=T0)
    fleet.cached["gpu-00"].add("v2")
    fleet.cached["gpu-01"].add("v2")
    plan = plan_rollout(mv, fleet.nodes, fleet.observe(), plan.rollout, now=T0)
    assert plan.rollout.phase == "Canary"
    late = T0 + dt.timedelta(seconds=31)
    plan = plan_rollout(mv, fleet.nodes, fleet.observe(), plan.rollout, now=late)
    assert plan.rollout.phase == "Failed"
    assert "within 30s" in plan.rollout.failed[0].reason


@pytest.mark.parametrize("threshold", [0, 1])
def test_pull_failure_during_prefetch(threshold: int) -> None:
    fleet, state = deployed(4)
    fleet.pull_fails.add(("gpu-03", "v2"))
    _, final = run(fleet, spec("v2", failureThreshold=threshold), state)
    if threshold == 0:
        assert final.phase == "Failed"
        assert all(fleet.active[n] == "v1" for n in fleet.nodes), "nothing was flipped"
    else:
        assert final.phase == "Complete"
        assert fleet.active["gpu-03"] == "v1"
        assert all(fleet.active[n] == "v2" for n in fleet.nodes[:3])


@settings(max_examples=60, deadline=None)
@given(
    nodes=st.integers(1, 12),
    canary=st.integers(0, 3),
    max_unavailable=st.one_of(st.integers(1, 5), st.sampled_from(["10%", "25%", "50%", "100%"])),
    failing=st.sets(st.integers(0, 11), max_size=3),
    threshold=st.integers(0, 2),
)
def test_rollout_invariants(
    nodes: int, canary: int, max_unavailable: int | str, failing: set[int], threshold: int
) -> None:
    fleet, state = deployed(nodes)
    for index in failing:
        if index < nodes:
            fleet.reload_fails.add((fleet.nodes[index], "v2"))
    mv = spec("v2", canary=canary, maxUnavailable=max_unavailable, failureThreshold=threshold)
    bound = mv.rollout.max_unavailable_count(nodes)
    plans: list[Plan] = []
    current: RolloutState | None = state
    now = T0
    for _ in range(100):
        view = fleet.observe()
        plan = plan_rollout(mv, fleet.nodes, view, current, now=now)
        plans.append(plan)
        assert in_flight(plan, view, "v2") <= bound, (
            "more than maxUnavailable between flip and reload"
        )
        fleet.apply(plan)
        current = plan.rollout
        now += dt.timedelta(seconds=1)
        if current.phase in ("Complete", "Failed"):
            break
    assert current is not None
    failed_nodes = {fleet.nodes[i] for i in failing if i < nodes}
    if len(failed_nodes) > threshold:
        assert current.phase == "Failed"
        final = plan_rollout(mv, fleet.nodes, fleet.observe(), current, now=now)
        assert all(a.active == "v1" for a in final.assignments.values())
    else:
        assert current.phase == "Complete"
        healthy = [n for n in fleet.nodes if n not in failed_nodes]
        assert all(fleet.observe()[n].serving("v2") for n in healthy)
    first_flips = next(
        (
            [n for n, a in p.assignments.items() if a.active == "v2"]
            for p in plans
            if any(a.active == "v2" for a in p.assignments.values())
        ),
        [],
    )
    if canary and first_flips:
        assert len(first_flips) == min(canary, bound, nodes)


def test_nodes_that_failed_within_the_threshold_stay_on_the_old_version() -> None:
    """Found by the invariant test: completion must not re-flip nodes whose pods refused."""
    fleet, state = deployed(3)
    fleet.reload_fails.add(("gpu-01", "v2"))
    plans, final = run(fleet, spec("v2", canary=0, maxUnavailable=1, failureThreshold=1), state)
    assert final.phase == "Complete"
    assert plans[-1].assignments["gpu-01"].active == "v1"
    assert {plans[-1].assignments[n].active for n in ("gpu-00", "gpu-02")} == {"v2"}
    assert plans[-1].phase == "Degraded"
    assert any("every node but gpu-01" in e.message for p in plans for e in p.events)


def test_a_node_going_not_ready_mid_prefetch_counts_against_the_threshold() -> None:
    fleet, state = deployed(3)
    fleet.not_ready.add("gpu-01")  # its kubelet stopped: it will never report v2
    plans, final = run(fleet, spec("v2", canary=1, failureThreshold=0), state)
    assert final.phase == "Failed", "not stuck in Prefetching waiting for a silent node"
    assert [(f.node, f.reason) for f in final.failed] == [
        ("gpu-01", "node NotReady: its kubelet stopped reporting")
    ]
    assert all(a.active == "v1" for a in plans[-1].assignments.values())
    assert plans[-1].phase == "Degraded"
    assert any(
        e.type == "Warning" and e.reason == "NodeFailed" and "gpu-01" in e.message
        for p in plans
        for e in p.events
    )


def test_a_not_ready_node_within_the_threshold_stays_behind() -> None:
    fleet, state = deployed(3)
    fleet.not_ready.add("gpu-02")
    plans, final = run(fleet, spec("v2", canary=1, failureThreshold=1), state)
    assert final.phase == "Complete"
    assert [f.node for f in final.failed] == ["gpu-02"]
    assert [fleet.active[n] for n in fleet.nodes] == ["v2", "v2", "v1"]
    assert plans[-1].phase == "Degraded"


def test_a_not_ready_node_already_serving_the_target_is_not_a_failure() -> None:
    fleet, state = deployed(2)
    fleet.not_ready.add("gpu-00")
    plan = plan_rollout(spec("v1"), fleet.nodes, fleet.observe(), state, now=T0)
    assert plan.rollout.failed == []
    assert plan.rollout.phase == "Complete"


@settings(max_examples=60, deadline=None)
@given(
    timeout=st.integers(min_value=1, max_value=900),
    elapsed=st.floats(min_value=0, max_value=2000, allow_nan=False),
)
def test_only_the_deadline_changes_a_waiting_plan_by_itself(timeout: int, elapsed: float) -> None:
    """The operator sleeps a waiting rollout until `next_deadline`: before it, the same
    observations give the same plan; after it, the wave has timed out."""
    fleet, state = deployed(2)
    mv = spec("v2", canary=1, maxUnavailable=1, waveTimeoutSeconds=timeout)
    prefetching = plan_rollout(mv, fleet.nodes, fleet.observe(), state, now=T0)
    assert next_deadline(mv, prefetching.rollout, T0) is None, "only agents' reports move it"
    later = T0 + dt.timedelta(seconds=elapsed)
    assert plan_rollout(
        mv, fleet.nodes, fleet.observe(), prefetching.rollout, now=later
    ).rollout == (prefetching.rollout)
    for node in fleet.nodes:
        fleet.cached[node].add("v2")
    canary = plan_rollout(mv, fleet.nodes, fleet.observe(), prefetching.rollout, now=T0)
    assert canary.rollout.phase == "Canary"
    deadline = next_deadline(mv, canary.rollout, T0)
    assert deadline == dt.timedelta(seconds=timeout)
    # The canary node never reports its reload: nothing changes until the deadline.
    waited = plan_rollout(mv, fleet.nodes, fleet.observe(), canary.rollout, now=later)
    if later <= T0 + deadline:
        assert waited.rollout == canary.rollout
    else:
        assert waited.rollout.phase == "Failed"
        assert next_deadline(mv, waited.rollout, later) is None
