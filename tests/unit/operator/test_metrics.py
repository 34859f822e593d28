"""The operator's metrics from the rollout states a reconcile step writes: what counts as a
rollout started and ended, and the phase series a standby or a deleted ModelVersion drops."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from modelcache.api import RolloutState
from modelcache.operator.metrics import (
    ENDED,
    PHASES,
    OperatorMetrics,
    RolloutEnd,
    Transitions,
    transitions,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def state(
    target: str, phase: str, *, stable: str | None = None, at: dt.datetime = T0
) -> RolloutState:
    return RolloutState.model_validate(
        {"target": target, "phase": phase, "stable": stable, "started_at": at}
    )


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_new_model_versions_first_rollout_starts() -> None:
    assert transitions(None, state("v1", "Prefetching")) == Transitions(True, ())


def test_a_step_within_a_rollout_is_no_transition() -> None:
    assert transitions(state("v2", "Canary"), state("v2", "Waves")) == Transitions(False, ())


def test_a_rollout_reaching_complete_ends_completed_once() -> None:
    done = state("v2", "Complete", stable="v1")
    assert transitions(state("v2", "Waves", stable="v1"), done) == Transitions(
        False, (RolloutEnd("completed", T0),)
    )
    assert transitions(done, done) == Transitions(False, ()), "a settled rollout re-planned"


def test_a_failed_rollout_with_a_version_to_go_back_to_is_reverted() -> None:
    old = state("v2", "Canary", stable="v1")
    assert transitions(old, state("v2", "Failed", stable="v1")).ended == (
        RolloutEnd("reverted", T0),
    )
    first = state("v1", "Prefetching")
    assert transitions(first, state("v1", "Failed")).ended == (RolloutEnd("failed", T0),)


def test_a_new_version_during_a_rollout_supersedes_it() -> None:
    later = T0 + dt.timedelta(minutes=3)
    step = transitions(state("v2", "Waves", stable="v1"), state("v3", "Prefetching", at=later))
    assert step == Transitions(True, (RolloutEnd("superseded", T0),))


def test_a_rollback_that_flips_everywhere_in_one_step_starts_and_ends_in_it() -> None:
    step = transitions(state("v2", "Complete", stable="v1"), state("v1", "Complete", stable="v2"))
    assert step == Transitions(True, (RolloutEnd("completed", T0),))


PHASE = st.sampled_from(["Prefetching", "Canary", "Waves", "Complete", "Failed"])
ROLLOUT = st.builds(
    lambda target, phase, stable: state(target, phase, stable=stable),
    st.sampled_from(["v1", "v2", "v3"]),
    PHASE,
    st.none() | st.sampled_from(["v0", "v1"]),
)


@given(st.lists(ROLLOUT, min_size=1, max_size=12))
def test_every_rollout_ends_at_most_once_and_never_before_it_starts(
    states: list[RolloutState],
) -> None:
    """Along any sequence of written statuses: started - ended is 0 or 1 (the one in
    flight), and it is 1 exactly when the last status's rollout has not ended."""
    started = ended = 0
    old: RolloutState | None = None
    for index, drawn in enumerate(states):
        # The planner keeps an ended rollout as it is until spec.version changes.
        ended_already = old is not None and old.target == drawn.target and old.phase in ENDED
        new = old if ended_already and old is not None else drawn
        states[index] = new
        step = transitions(old, new)
        started += step.started
        ended += len(step.ended)
        assert started - ended in (0, 1)
        old = new
    assert started - ended == (0 if states[-1].phase in ("Complete", "Failed") else 1)


def test_the_counters_and_the_duration_follow_the_steps() -> None:
    metrics = OperatorMetrics()
    metrics.rollout_step(None, state("v1", "Prefetching"), T0)
    metrics.rollout_step(
        state("v1", "Waves"), state("v1", "Complete"), T0 + dt.timedelta(seconds=90)
    )
    metrics.rollout_step(state("v1", "Complete"), state("v2", "Canary", stable="v1", at=T0), T0)
    metrics.rollout_step(
        state("v2", "Canary", stable="v1"),
        state("v2", "Failed", stable="v1"),
        T0 + dt.timedelta(seconds=20),
    )
    assert value(metrics, "modelcache_rollouts_started_total") == 2
    assert value(metrics, "modelcache_rollouts_ended_total", result="completed") == 1
    assert value(metrics, "modelcache_rollouts_ended_total", result="reverted") == 1
    assert value(metrics, "modelcache_rollouts_ended_total", result="failed") == 0
    completed = {"result": "completed"}
    assert value(metrics, "modelcache_rollout_duration_seconds_sum", **completed) == 90
    assert value(metrics, "modelcache_rollout_duration_seconds_bucket", le="60.0", **completed) == 0
    assert (
        value(metrics, "modelcache_rollout_duration_seconds_bucket", le="120.0", **completed) == 1
    )
    assert value(metrics, "modelcache_rollout_duration_seconds_sum", result="reverted") == 20


def test_one_phase_series_per_phase_is_1_and_the_rest_0() -> None:
    metrics = OperatorMetrics()
    metrics.set_phase("studio/base", "RollingOut")
    metrics.set_phase("studio/base", "Degraded")
    got = {
        p: value(metrics, "modelcache_modelversion_phase", model="studio/base", phase=p)
        for p in PHASES
    }
    assert got == {p: (1.0 if p == "Degraded" else 0.0) for p in PHASES}


def test_a_forgotten_model_version_has_no_phase_series_left() -> None:
    """A deleted ModelVersion, or a replica that became a standby, reports no phase."""
    metrics = OperatorMetrics()
    metrics.set_phase("studio/base", "Available")
    metrics.set_phase("studio/lora", "Degraded")
    metrics.forget("studio/base")
    metrics.forget("studio/never-seen")
    text = generate_latest(metrics.registry).decode()
    assert 'model="studio/base"' not in text
    assert (
        value(metrics, "modelcache_modelversion_phase", model="studio/lora", phase="Degraded") == 1
    )


def test_the_known_label_values_are_exported_before_anything_happens() -> None:
    """So `increase()` sees the first failure: a series born at 1 has no increase."""
    metrics = OperatorMetrics()
    for reason in ("api", "invalid_spec", "other"):
        assert value(metrics, "modelcache_operator_reconcile_errors_total", reason=reason) == 0
    for result in ("completed", "failed", "reverted", "superseded"):
        assert value(metrics, "modelcache_rollouts_ended_total", result=result) == 0
    metrics.reconcile_error("api")
    assert value(metrics, "modelcache_operator_reconcile_errors_total", reason="api") == 1
