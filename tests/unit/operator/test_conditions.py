"""The Ready / Reconciling / Stalled conditions GitOps tools read (kstatus, Argo CD).

kstatus calls a resource Current unless Reconciling or Stalled is True, so every state
that is not Available must set exactly one of them; the Go tools themselves are asked
in tests/integration/operator/test_gitops_health.py.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from modelcache.api.modelversion import ModelVersionSpec, NodeFailure, RolloutState
from modelcache.operator.planner import Plan, _phase, plan_rollout
from modelcache.operator.reconcile import _conditions

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
SPEC = ModelVersionSpec.model_validate({"source": {"url": "oss://models/lora"}, "version": "v2"})


def _true(plan: Plan) -> dict[str, str]:
    """The GitOps conditions that are True, with their reasons."""
    return {
        c.type: c.reason
        for c in _conditions([], plan, T0, 3)
        if c.type in ("Ready", "Reconciling", "Stalled") and c.status == "True"
    }


@given(
    phase=st.sampled_from(["Prefetching", "Canary", "Waves", "Complete", "Failed"]),
    failed=st.booleans(),
    stable=st.sampled_from([None, "v1"]),
    total=st.integers(min_value=0, max_value=5),
    serving=st.integers(min_value=0, max_value=5),
)
def test_exactly_one_of_ready_reconciling_stalled(
    phase: str, failed: bool, stable: str | None, total: int, serving: int
) -> None:
    serving = min(serving, total)
    rollout = RolloutState.model_validate(
        {
            "target": "v2",
            "stable": stable,
            "phase": phase,
            "failed": [NodeFailure(node="gpu-0", reason="pull failed").model_dump()]
            if failed
            else [],
        }
    )
    plan = Plan({}, rollout, (), (), serving, total, _phase(rollout, serving, total))
    true = _true(plan)
    assert len(true) == 1, true
    assert ("Ready" in true) == (plan.phase == "Available")
    assert ("Stalled" in true) == (plan.phase == "Degraded")
    if "Stalled" in true and phase == "Failed":
        assert true["Stalled"] == ("RolloutReverted" if stable else "RolloutFailed")


def test_no_selected_node_is_reconciling_not_ready() -> None:
    plan = plan_rollout(SPEC, [], {}, None, now=T0)
    assert _true(plan) == {"Reconciling": "NoNodesSelected"}
    ready = next(c for c in _conditions([], plan, T0, 3) if c.type == "Ready")
    assert (ready.status, ready.reason, ready.observed_generation) == ("False", "Pending", 3)


def test_nodes_left_out_for_their_taints_are_named_in_the_status() -> None:
    """On kind, an empty nodeSelector matches the control plane: the user reads why it is
    not counted, in Prefetched's message, and in Reconciling's when nothing is left."""
    plan = plan_rollout(SPEC, ["gpu-0", "gpu-1"], {}, None, now=T0)
    conditions = {c.type: c for c in _conditions([], plan, T0, 3, ["kind-control-plane"])}
    assert conditions["Prefetched"].message == (
        "0/2 nodes hold v2 (1 node left out: the agent does not run there: kind-control-plane)"
    )
    plain = {c.type: c for c in _conditions([], plan, T0, 3)}
    assert plain["Prefetched"].message == "0/2 nodes hold v2"

    nothing = plan_rollout(SPEC, [], {}, None, now=T0)
    left = [f"cp-{i}" for i in range(5)]
    reconciling = next(c for c in _conditions([], nothing, T0, 3, left) if c.type == "Reconciling")
    assert (reconciling.status, reconciling.reason) == ("True", "NoNodesSelected")
    assert reconciling.message == (
        "no node an agent runs on matches nodeSelector "
        "(5 nodes left out: the agent does not run there: cp-0, cp-1, cp-2, ...)"
    )
