"""The operator rewrites only its own model's entry in a NodeCache, and reads the agent's report."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache.api.modelversion import HistoryEntry, ModelVersionSpec
from modelcache.api.nodecache import NodeCacheSpec, NodeCacheStatus, NodeModel
from modelcache.operator.nodeview import desired_entry, observation, with_entry, without_entry
from modelcache.operator.planner import Assignment, NodeObservation
from modelcache.operator.rollback import NoRollbackTarget, previous_version

NOW = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)


def entry(namespace: str, name: str, active: str = "v1") -> NodeModel:
    return NodeModel(
        namespace=namespace, name=name, source="oss://b/p", versions=[active], active=active
    )


@given(
    names=st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4),
    target=st.sampled_from(["a", "b", "c", "d", "e"]),
)
def test_with_entry_replaces_only_its_own_model(names: list[str], target: str) -> None:
    spec = NodeCacheSpec(models=[entry("ns", n) for n in names])
    updated = with_entry(spec, entry("ns", target, active="v9"))
    assert [m.name for m in updated.models if m.name != target] == [n for n in names if n != target]
    (mine,) = [m for m in updated.models if m.name == target]
    assert mine.active == "v9"
    assert [m.name for m in without_entry(updated, "ns", target).models] == [
        n for n in names if n != target
    ]


def test_observation_reads_cached_active_reloaded_and_failures() -> None:
    status = NodeCacheStatus.model_validate(
        {
            "models": [
                {
                    "namespace": "studio",
                    "name": "lora",
                    "active": "v2",
                    "reloadedVersion": None,
                    "versions": [
                        {"version": "v1", "state": "Cached"},
                        {"version": "v2", "state": "Cached"},
                        {"version": "v3", "state": "Failed", "message": "checksum mismatch"},
                    ],
                    "reloads": [
                        {
                            "pod": "studio-0",
                            "version": "v2",
                            "ok": False,
                            "reason": "bad rank",
                            "at": NOW.isoformat(),
                        }
                    ],
                }
            ]
        }
    )
    seen = observation(status, "studio", "lora")
    assert seen.cached == {"v1", "v2"}
    assert seen.failed == {"v3": "checksum mismatch"}
    assert (seen.active, seen.reloaded, seen.reload_error) == ("v2", None, "bad rank")
    assert observation(status, "studio", "other").cached == frozenset()
    assert observation(None, "studio", "lora").active is None


def test_a_pod_that_did_not_answer_its_reload_is_not_a_failure() -> None:
    """A pod still starting when its node flips: the agent retries, the wave timeout decides."""
    reload = {"pod": "studio-0", "version": "v2", "ok": False, "at": NOW.isoformat()}
    model = {"namespace": "studio", "name": "lora", "active": "v2", "versions": []}

    def seen(**fields: object) -> NodeObservation:
        status = {"models": [{**model, "reloads": [{**reload, **fields}]}]}
        return observation(NodeCacheStatus.model_validate(status), "studio", "lora")

    assert seen(answered=False, reason="unreachable: connection refused").reload_error is None
    assert seen(reason="LoRA rank 16 does not fit slot rank 8").reload_error is not None


def test_desired_entry_carries_source_retention_and_reload_target() -> None:
    spec = ModelVersionSpec.model_validate(
        {
            "source": {"url": "oss://models/lora", "credentialsSecret": {"name": "oss"}},
            "version": "v2",
            "retain": 3,
            "reload": {"podSelector": {"matchLabels": {"app": "studio"}}, "port": 8080},
        }
    )
    made = desired_entry("studio", "lora", spec, Assignment(("v2", "v1"), "v1"))
    wire = made.to_wire()
    assert wire["versions"] == ["v2", "v1"]
    assert wire["active"] == "v1"
    assert wire["retain"] == 3
    assert wire["credentialsSecret"] == {"name": "oss"}
    assert wire["reload"]["podSelector"] == {
        "matchLabels": {"app": "studio"},
        "matchExpressions": [],
    }


def test_previous_version_skips_the_current_one() -> None:
    history = [HistoryEntry(version=v, activated_at=NOW) for v in ["v1", "v2", "v3"]]
    assert previous_version(history, "v3") == "v2"
    assert previous_version(history, "v9") == "v3"
    assert previous_version(history[:1], "v3") == "v1"
    with pytest.raises(NoRollbackTarget):
        previous_version(history[:1], "v1")
