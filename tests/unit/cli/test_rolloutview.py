"""The rollout view `modelcache status` shows: waves, node rows, the L3 share, the outcome."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.api import HistoryEntry, ModelVersionSpec, ModelVersionStatus, RolloutState
from modelcache.cli.rollouttext import plain_lines
from modelcache.cli.rolloutview import RolloutView, build_view, carry_sources, waves_of
from modelcache.operator.planner import NodeObservation, plan_rollout

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MiB = 1 << 20


def model_version(
    spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "sdxl", "namespace": "studio", "generation": generation},
        "spec": {"source": {"url": "s3://models/sdxl"}, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def node_cache(node: str, held: list[dict[str, Any]] | None, **model: Any) -> dict[str, Any]:
    """A NodeCache that gives `node` the model; `held` None: its agent has not reported."""
    body: dict[str, Any] = {
        "metadata": {"name": node},
        "spec": {"models": [{"namespace": "studio", "name": "sdxl"}]},
    }
    if held is not None:
        body["status"] = {
            "models": [{"namespace": "studio", "name": "sdxl", "versions": held, **model}]
        }
    return body


# -- waves: the planner's own waves, found again from what it keeps in status ---------------


def run_rollout(
    nodes: list[str], canary: int, max_unavailable: int, *, stable: bool
) -> tuple[ModelVersionSpec, RolloutState, list[tuple[str, ...]], bool]:
    """Roll v2 out with agents that hold and serve at once what they are told; returns the
    spec, the final state, each step's newly flipped nodes (the waves), and whether a
    canary went first."""
    spec = ModelVersionSpec.model_validate(
        {
            "source": {"url": "s3://models/sdxl"},
            "version": "v2",
            "rollout": {"canary": canary, "maxUnavailable": max_unavailable},
        }
    )
    state = RolloutState(target="v1", phase="Complete") if stable else None
    observed = {n: NodeObservation(cached=frozenset({"v1", "v2"})) for n in nodes}
    waves: list[tuple[str, ...]] = []
    canary_went_first = False
    for _ in range(len(nodes) + 3):
        plan = plan_rollout(spec, nodes, observed, state, history=["v1"] if stable else [], now=NOW)
        before = set(state.flipped) if state and state.target == "v2" else set()
        new = tuple(n for n in plan.rollout.flipped if n not in before)
        if new:
            waves.append(new)
        canary_went_first |= any(e.reason == "CanaryStarted" for e in plan.events)
        state = plan.rollout
        observed = {
            n: NodeObservation(cached=frozenset({"v1", "v2"}), active=a.active, reloaded=a.active)
            for n, a in plan.assignments.items()
        }
        if state.phase == "Complete":
            break
    assert state is not None
    assert state.phase == "Complete"
    return spec, state, waves, canary_went_first


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 9),
    canary=st.integers(0, 4),
    max_unavailable=st.one_of(st.integers(1, 5), st.sampled_from(["10%", "34%", "50%", "100%"])),
    stable=st.booleans(),
)
def test_waves_are_the_planners_waves(
    count: int, canary: int, max_unavailable: int | str, stable: bool
) -> None:
    nodes = [f"gpu-{i}" for i in range(count)]
    spec, state, waves, canary_first = run_rollout(nodes, canary, max_unavailable, stable=stable)  # type: ignore[arg-type]
    found = waves_of(state.flipped, state.wave, canary, spec.rollout.max_unavailable_count(count))
    assert found == waves
    history = [HistoryEntry(version=v, activated_at=NOW) for v in (["v1"] if stable else [])]
    status = ModelVersionStatus(
        observed_generation=1,
        phase="Available",
        ready=f"{count}/{count}",
        rollout=state,
        history=[*history, HistoryEntry(version="v2", activated_at=NOW)],
    )
    caches = [
        node_cache(
            n,
            [{"version": "v2", "state": "Cached", "bytes": MiB}],
            active="v2",
            reloadedVersion="v2",
        )
        for n in nodes
    ]
    view = build_view(model_version(spec.to_wire(), status.to_wire()), caches)
    assert [w.nodes for w in view.waves] == waves
    assert [w.canary for w in view.waves] == [canary_first] + [False] * (len(waves) - 1)
    assert all(w.done for w in view.waves)
    assert [r.wave for r in view.nodes] == [
        next(i + 1 for i, w in enumerate(waves) if r.node in w) for r in view.nodes
    ]


@given(
    flipped=st.lists(st.text("abcdef", min_size=1, max_size=3), unique=True, max_size=12),
    wave_count=st.integers(0, 12),
    canary=st.integers(0, 5),
    size=st.integers(1, 5),
)
def test_waves_cut_the_flip_order_without_losing_a_node(
    flipped: list[str], wave_count: int, canary: int, size: int
) -> None:
    waves = waves_of(flipped, wave_count, canary, size)
    assert [n for w in waves for n in w] == flipped
    assert all(len(w) > 0 for w in waves)
    if wave_count > 1:
        assert all(len(w) <= size for w in waves)


# -- rows, share, outcome -----------------------------------------------------------------


def rolling(
    phase: str = "RollingOut", generation: int = 1, step: str = "Prefetching", **rollout: Any
) -> dict[str, Any]:
    """A ModelVersion status in `phase`, its rollout of v2 (from v1) at `step`."""
    return {
        "observedGeneration": generation,
        "phase": phase,
        "ready": "0/2",
        "rollout": {"target": "v2", "stable": "v1", "phase": step, **rollout},
    }


SPEC = {"version": "v2", "rollout": {"canary": 1, "maxUnavailable": 1}}


def test_a_pull_in_progress_shows_its_bar_and_where_its_bytes_came_from() -> None:
    pulling = {"version": "v2", "state": "Pulling", "bytes": 4 * MiB, "bytesDone": MiB}
    view = build_view(
        model_version(SPEC, rolling("Prefetching")),
        [
            node_cache("a", [{**pulling, "bytesFromPeers": 0}], active="v1"),
            node_cache("b", [{**pulling, "bytesDone": 3 * MiB, "bytesFromPeers": 3 * MiB}]),
            node_cache("c", None),
            {"metadata": {"name": "other"}, "spec": {"models": []}},  # not given this model
        ],
    )
    assert [r.node for r in view.nodes] == ["a", "b", "c"]
    a, b, c = view.nodes
    assert (a.fraction, b.fraction, c.fraction) == (0.25, 0.75, 0.0)
    assert (a.active, a.state, c.state) == ("v1", "Pulling", "Pending")
    assert (view.pulled, view.bytes_from_peers, view.bytes_from_l3) == (4 * MiB, 3 * MiB, MiB)
    assert view.l3_share == 0.25
    assert view.outcome is None
    assert "  bytes of v2 pulled: 4.0 MiB, from L3 1.0 MiB (25%), from peers 3.0 MiB" in (
        plain_lines(view)
    )


def test_a_cached_version_is_whole_and_its_sources_are_kept_from_the_pull() -> None:
    pulling = model_version(SPEC, rolling("Prefetching"))
    first = build_view(
        pulling,
        [
            node_cache(
                "a",
                [
                    {
                        "version": "v2",
                        "state": "Pulling",
                        "bytes": 2 * MiB,
                        "bytesDone": MiB,
                        "bytesFromPeers": MiB,
                    }
                ],
            )
        ],
    )
    cached = build_view(
        pulling, [node_cache("a", [{"version": "v2", "state": "Cached", "bytes": 2 * MiB}])]
    )
    assert cached.nodes[0].fraction == 1.0
    assert cached.nodes[0].bytes_done == 2 * MiB
    assert cached.l3_share is None, "a cached version's report does not say where it came from"
    kept = carry_sources(first, cached)
    assert (kept.pulled, kept.bytes_from_peers, kept.l3_share) == (MiB, MiB, 0.0)
    assert kept.nodes[0].fraction == 1.0
    other = build_view(
        model_version({**SPEC, "version": "v3"}, rolling("Prefetching")),
        [node_cache("a", [{"version": "v3", "state": "Cached", "bytes": MiB}])],
    )
    assert carry_sources(first, other) == other, "another target's sources are not this one's"


def test_an_available_status_of_an_older_spec_is_not_the_end() -> None:
    status = {**rolling("Available", generation=1), "ready": "2/2"}
    status["rollout"] = {"target": "v1", "phase": "Complete"}
    view = build_view(model_version(SPEC, status, generation=2), [])
    assert not view.observed
    assert view.outcome is None
    same_generation = build_view(model_version(SPEC, status, generation=1), [])
    assert same_generation.outcome is None, "the status is about v1, the spec asks for v2"
    current = {**status, "rollout": {"target": "v2", "stable": "v1", "phase": "Complete"}}
    assert build_view(model_version(SPEC, current, generation=1), []).outcome == "Available"
    assert build_view(model_version(SPEC), []).outcome is None, "no status yet"


def test_a_failed_rollout_is_degraded_with_its_reasons() -> None:
    status = rolling(
        "Degraded",
        step="Failed",
        flipped=["a"],
        wave=1,
        failed=[{"node": "a", "reason": "reload failed: rank"}],
    )
    status["conditions"] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Degraded",
            "lastTransitionTime": NOW.isoformat(),
        },
        {
            "type": "Stalled",
            "status": "True",
            "reason": "RolloutReverted",
            "message": "v2 stopped, flipped back to v1",
            "lastTransitionTime": NOW.isoformat(),
        },
    ]
    view = build_view(
        model_version(SPEC, status),
        [
            node_cache(
                "a",
                [{"version": "v2", "state": "Cached", "bytes": MiB}],
                active="v1",
                reloadedVersion="v1",
            ),
            node_cache(
                "b",
                [{"version": "v2", "state": "Failed", "message": "403 from L3"}],
                active="v1",
                lastError="pull of v2: 403 from L3",
            ),
        ],
    )
    assert view.outcome == "Degraded"
    assert view.failures == (("a", "reload failed: rank"),)
    assert view.problems == ("Stalled: RolloutReverted: v2 stopped, flipped back to v1",)
    assert [w.canary for w in view.waves] == [True], "a rollout with a stable version: canary"
    assert view.nodes[0].error == "reload failed: rank"
    assert view.nodes[1].error == "403 from L3"


# -- rich input: whatever agents report, the view stays within bounds ----------------------

held_versions = st.lists(
    st.fixed_dictionaries(
        {
            "version": st.sampled_from(["v1", "v2", "v3"]),
            "state": st.sampled_from(["Pending", "Pulling", "Cached", "Failed"]),
            "bytes": st.integers(0, 10**12),
            "bytesDone": st.integers(0, 10**12),
            "bytesFromPeers": st.integers(0, 10**12),
        }
    ),
    max_size=4,
)


@given(
    reports=st.dictionaries(
        st.text("abcdefgh-", min_size=1, max_size=8),
        st.tuples(st.one_of(st.none(), held_versions), st.sampled_from([None, "v1", "v2"])),
        max_size=6,
    ),
    phase=st.sampled_from(["Pending", "Prefetching", "RollingOut", "Available", "Degraded"]),
    flipped=st.lists(st.text("abcdefgh-", min_size=1, max_size=8), unique=True, max_size=4),
)
def test_any_agent_reports_make_a_bounded_view_and_one_line_per_node(
    reports: dict[str, tuple[list[dict[str, Any]] | None, str | None]],
    phase: str,
    flipped: list[str],
) -> None:
    caches = [
        node_cache(node, held, active=active) if held is not None else node_cache(node, None)
        for node, (held, active) in reports.items()
    ]
    status = rolling(phase, step="Waves", flipped=flipped, wave=len(flipped))
    view: RolloutView = build_view(model_version(SPEC, status), caches)
    assert sorted(r.node for r in view.nodes) == sorted(set(reports) | set(flipped))
    for row in view.nodes:
        assert 0.0 <= row.fraction <= 1.0
        assert 0 <= row.bytes_from_peers <= row.pulled <= max(row.bytes_total, 0)
    share = view.l3_share
    assert share is None or 0.0 <= share <= 1.0
    lines = plain_lines(view)
    for row in view.nodes:
        assert sum(line.startswith(f"  {row.node}  ") for line in lines) == 1
