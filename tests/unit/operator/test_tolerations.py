"""Which Nodes the agent DaemonSet runs on: Kubernetes' toleration rules, the taints the
DaemonSet controller tolerates by itself, and `--agent-tolerations` parsing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache.operator.tolerations import (
    EFFECTS,
    MAX_TOLERATIONS,
    MAX_TOLERATIONS_BYTES,
    Taint,
    Toleration,
    daemon_pod_tolerations,
    parse_node_selector,
    parse_tolerations,
    split_schedulable,
    taints_of,
    untolerated,
)

CHART_DEFAULT = (Toleration("nvidia.com/gpu", "Exists", effect="NoSchedule"),)
CONTROL_PLANE = Taint("node-role.kubernetes.io/control-plane", "NoSchedule")


def tol(**fields: Any) -> Toleration:
    """A toleration as a pod spec writes it (the operator defaults to Equal)."""
    (parsed,) = parse_tolerations(json.dumps([fields]))
    return parsed


# (toleration as in a pod spec, taint, tolerated): the cases of the Kubernetes docs'
# "Taints and Tolerations" page and of core/v1 Toleration.ToleratesTaint.
CASES: list[tuple[dict[str, Any], Taint, bool]] = [
    # A toleration matches a taint with the same key and effect, and, for Equal, value.
    (
        {"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoSchedule"},
        Taint("key1", "NoSchedule", "value1"),
        True,
    ),
    (
        {"key": "key1", "operator": "Exists", "effect": "NoSchedule"},
        Taint("key1", "NoSchedule", "value1"),
        True,
    ),
    (
        {"key": "key1", "value": "value1", "effect": "NoSchedule"},
        Taint("key1", "NoSchedule", "value1"),
        True,
    ),
    (
        {"key": "key1", "operator": "Equal", "value": "other", "effect": "NoSchedule"},
        Taint("key1", "NoSchedule", "value1"),
        False,
    ),
    (
        {"key": "key1", "operator": "Equal", "effect": "NoSchedule"},
        Taint("key1", "NoSchedule", "value1"),
        False,
    ),
    (
        {"key": "key1", "operator": "Equal", "effect": "NoSchedule"},
        Taint("key1", "NoSchedule"),
        True,
    ),
    (
        {"key": "key2", "operator": "Exists", "effect": "NoSchedule"},
        Taint("key1", "NoSchedule"),
        False,
    ),
    # The effect must match, unless the toleration names none: then it matches every effect.
    (
        {"key": "key1", "operator": "Exists", "effect": "NoSchedule"},
        Taint("key1", "NoExecute"),
        False,
    ),
    (
        {"key": "key1", "operator": "Exists", "effect": "NoExecute"},
        Taint("key1", "NoSchedule"),
        False,
    ),
    ({"key": "key1", "operator": "Exists"}, Taint("key1", "NoExecute"), True),
    ({"key": "key1", "operator": "Exists"}, Taint("key1", "NoSchedule", "v"), True),
    ({"key": "key1", "operator": "Equal", "value": "v"}, Taint("key1", "NoExecute", "v"), True),
    # An empty key with Exists matches every key, value and effect.
    ({"operator": "Exists"}, Taint("anything", "NoExecute", "any"), True),
    ({"operator": "Exists"}, CONTROL_PLANE, True),
    ({"operator": "Exists", "effect": "NoSchedule"}, CONTROL_PLANE, True),
    ({"operator": "Exists", "effect": "NoExecute"}, CONTROL_PLANE, False),
    # tolerationSeconds does not change whether a taint is tolerated.
    (
        {"key": "key1", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3600},
        Taint("key1", "NoExecute"),
        True,
    ),
]


@pytest.mark.parametrize(("toleration", "taint", "tolerated"), CASES)
def test_kubernetes_documented_cases(
    toleration: dict[str, Any], taint: Taint, tolerated: bool
) -> None:
    assert tol(**toleration).tolerates(taint) is tolerated


def test_the_docs_example_a_pod_tolerating_two_of_three_taints_is_not_scheduled() -> None:
    taints = [
        Taint("key1", "NoSchedule", "value1"),
        Taint("key1", "NoExecute", "value1"),
        Taint("key2", "NoSchedule", "value2"),
    ]
    tolerations = [
        tol(key="key1", operator="Equal", value="value1", effect="NoSchedule"),
        tol(key="key1", operator="Equal", value="value1", effect="NoExecute"),
    ]
    assert untolerated(taints, tolerations) == [Taint("key2", "NoSchedule", "value2")]


def test_prefer_no_schedule_never_keeps_the_agent_off() -> None:
    assert untolerated([Taint("key1", "PreferNoSchedule")], []) == []


def test_the_charts_default_runs_on_gpu_nodes_and_not_on_a_kubeadm_control_plane() -> None:
    agent = daemon_pod_tolerations(CHART_DEFAULT)
    nodes = {
        "kind-control-plane": (CONTROL_PLANE,),
        "gpu-0": (Taint("nvidia.com/gpu", "NoSchedule"),),
        "gpu-1": (Taint("nvidia.com/gpu", "NoSchedule", "present"),),
        "cpu-0": (),
        "spot-0": (Taint("cloud.google.com/gke-spot", "NoSchedule", "true"),),
    }
    assert split_schedulable(nodes, nodes, agent) == (
        ["cpu-0", "gpu-0", "gpu-1"],
        ["kind-control-plane", "spot-0"],
    )


def test_gpu_nodes_tainted_no_execute_need_their_own_toleration() -> None:
    evicting = {"gpu-0": (Taint("nvidia.com/gpu", "NoExecute"),)}
    assert split_schedulable(evicting, evicting, daemon_pod_tolerations(CHART_DEFAULT)) == (
        [],
        ["gpu-0"],
    )


@pytest.mark.parametrize(
    "taint",
    [
        Taint("node.kubernetes.io/unschedulable", "NoSchedule"),  # cordoned
        Taint("node.kubernetes.io/disk-pressure", "NoSchedule"),
        Taint("node.kubernetes.io/memory-pressure", "NoSchedule"),
        Taint("node.kubernetes.io/pid-pressure", "NoSchedule"),
        Taint("node.kubernetes.io/not-ready", "NoSchedule"),
        Taint("node.kubernetes.io/not-ready", "NoExecute"),
        Taint("node.kubernetes.io/unreachable", "NoSchedule"),
        Taint("node.kubernetes.io/unreachable", "NoExecute"),
    ],
)
def test_a_cordoned_pressured_or_not_ready_node_keeps_its_agent(taint: Taint) -> None:
    """The DaemonSet controller's own tolerations, and readiness judged by readiness."""
    assert untolerated([taint], daemon_pod_tolerations(())) == []


def test_network_unavailable_is_tolerated_only_by_host_network_daemons() -> None:
    taint = Taint("node.kubernetes.io/network-unavailable", "NoSchedule")
    assert untolerated([taint], daemon_pod_tolerations(())) == [taint]


def test_tolerations_unknown_leave_no_node_out() -> None:
    taints = {"kind-control-plane": (CONTROL_PLANE,), "b": (), "a": ()}
    assert split_schedulable(taints, ["b", "kind-control-plane", "a"], None) == (
        ["a", "b", "kind-control-plane"],
        [],
    )


def test_taints_of_reads_a_nodes_spec() -> None:
    spec = {
        "taints": [
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "no-effect"},  # malformed: skipped
            "junk",
        ]
    }
    assert taints_of(spec) == (CONTROL_PLANE, Taint("nvidia.com/gpu", "NoSchedule", "present"))
    assert taints_of(None) == ()
    assert taints_of({"taints": None}) == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "tolerations: not JSON"),
        ('{"key": "a"}', "tolerations: a JSON list expected, got dict"),
        ('["a"]', "tolerations[0]: an object expected, got str"),
        ('[{"key": "a", "opertor": "Exists"}]', "tolerations[0]: unknown field 'opertor'"),
        (
            '[{"operator": "Exists"}, {"key": "a", "operator": "In"}]',
            "tolerations[1].operator: 'In' is not Exists or Equal",
        ),
        (
            '[{"key": "a", "effect": "NoSchedul"}]',
            "tolerations[0].effect: 'NoSchedul' is not one of",
        ),
        ('[{"key": 3}]', "tolerations[0].key: a string expected, got int"),
        ('[{"value": "v"}]', "tolerations[0].operator: must be Exists when the key is empty"),
        (
            '[{"key": "a", "operator": "Exists", "value": "v"}]',
            "tolerations[0].value: must be empty",
        ),
        (
            '[{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]',
            "tolerations[0].tolerationSeconds: only with effect NoExecute",
        ),
        (
            '[{"key": "a", "effect": "NoExecute", "tolerationSeconds": "5"}]',
            "tolerations[0].tolerationSeconds: an integer expected",
        ),
        (json.dumps([{"key": "k" * 400}]), "tolerations[0].key: 400 characters, at most 317"),
    ],
)
def test_a_bad_list_is_refused_naming_the_entry_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(problem)):
        parse_tolerations(text)


def test_the_size_is_checked_before_parsing() -> None:
    huge = "[" + " " * MAX_TOLERATIONS_BYTES + "]"
    with pytest.raises(ValueError, match=f"at most {MAX_TOLERATIONS_BYTES}"):
        parse_tolerations(huge)
    many = json.dumps([{"operator": "Exists"}] * (MAX_TOLERATIONS + 1))
    with pytest.raises(ValueError, match=f"at most {MAX_TOLERATIONS}"):
        parse_tolerations(many)


def test_the_charts_rendering_of_the_default_and_of_an_empty_list_parse() -> None:
    assert (
        parse_tolerations('[{"effect":"NoSchedule","key":"nvidia.com/gpu","operator":"Exists"}]')
        == CHART_DEFAULT
    )
    assert parse_tolerations("[]") == ()
    assert parse_tolerations("null") == (), "helm's toJson of an unset list"


keys = st.sampled_from(["", "nvidia.com/gpu", "node-role.kubernetes.io/control-plane", "k"])
values = st.sampled_from(["", "present", "true"])
effects = st.sampled_from(EFFECTS)
taints = st.builds(Taint, keys.filter(bool), effects, values)


@st.composite
def tolerations(draw: st.DrawFn) -> Toleration:
    """Any toleration the API server admits."""
    key = draw(keys)
    operator = "Exists" if not key else draw(st.sampled_from(["Exists", "Equal"]))
    value = "" if operator == "Exists" else draw(values)
    return Toleration(key, operator, value, draw(st.sampled_from(["", *EFFECTS])))


def as_pod_spec(t: Toleration) -> dict[str, str]:
    return {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}


@given(st.lists(tolerations(), max_size=6))
def test_every_admitted_list_parses_back_to_itself(given_: list[Toleration]) -> None:
    assert parse_tolerations(json.dumps([as_pod_spec(t) for t in given_])) == tuple(given_)


@given(taints)
def test_a_toleration_written_from_a_taint_tolerates_it_and_only_its_key(taint: Taint) -> None:
    assert Toleration(taint.key, "Equal", taint.value, taint.effect).tolerates(taint)
    assert Toleration(taint.key, "Exists").tolerates(taint)
    assert Toleration("", "Exists").tolerates(taint)
    assert not Toleration(taint.key + "x", "Exists").tolerates(taint)
    assert not Toleration(taint.key, "Equal", taint.value + "x").tolerates(taint)


@given(st.lists(taints, max_size=5), st.lists(tolerations(), max_size=4), tolerations())
def test_more_tolerations_never_leave_more_out(
    node: list[Taint], some: list[Toleration], another: Toleration
) -> None:
    before = untolerated(node, some)
    after = untolerated(node, [*some, another])
    assert set(after) <= set(before)
    assert all(t.effect != "PreferNoSchedule" for t in before)
    assert all(not any(x.tolerates(t) for x in some) for t in before)


@given(
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.lists(taints, max_size=3)),
    st.lists(tolerations(), max_size=3),
)
def test_the_split_is_a_sorted_partition(
    nodes: dict[str, list[Taint]], given_: list[Toleration]
) -> None:
    kept, left_out = split_schedulable(nodes, nodes, given_)
    assert kept == sorted(kept)
    assert left_out == sorted(left_out)
    assert sorted(kept + left_out) == sorted(nodes)
    assert all(untolerated(nodes[n], given_) for n in left_out)
    assert not any(untolerated(nodes[n], given_) for n in kept)


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["key", "operator", "value", "effect", "tolerationSeconds", "x"]), inner
        )
    ),
    max_leaves=12,
)


@given(json_values)
def test_any_json_is_either_a_list_of_tolerations_or_a_value_error(value: Any) -> None:
    try:
        parsed = parse_tolerations(json.dumps(value))
    except ValueError as error:
        problem = str(error)
    else:
        problem = ""
        assert all(isinstance(t, Toleration) for t in parsed)
    assert problem == "" or problem.startswith("tolerations"), problem


def test_a_node_holding_the_model_keeps_it_under_a_later_no_schedule_taint() -> None:
    """A maintenance taint does not evict the agent already running; NoExecute does."""
    agent = daemon_pod_tolerations(())
    taints = {
        "held": [Taint("example.com/maintenance", "NoSchedule")],
        "new": [Taint("example.com/maintenance", "NoSchedule")],
        "drained": [Taint("example.com/drain", "NoExecute")],
    }
    assert split_schedulable(taints, taints, agent, holding={"held", "drained"}) == (
        ["held"],
        ["drained", "new"],
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[]", "a JSON object expected, got list"),
        ('{"gpu": 1}', "nodeSelector['gpu']: a string of at most 63 characters"),
        ('{"": "x"}', "key '': 1 to 317 characters"),
        ("{", "not JSON"),
        (json.dumps({"a": "x" * 64}), "nodeSelector['a']: a string of at most 63 characters"),
    ],
)
def test_a_bad_node_selector_is_refused_naming_the_entry(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_node_selector(text)


def test_a_node_selector_parses_to_its_labels() -> None:
    assert parse_node_selector('{"nvidia.com/gpu.present": "true"}') == {
        "nvidia.com/gpu.present": "true"
    }
    assert parse_node_selector("{}") == {}
    assert parse_node_selector("null") == {}
    with pytest.raises(ValueError, match="at most 65536"):
        parse_node_selector(json.dumps({"k": "v" * 70000}))


def test_a_node_held_under_a_selector_it_no_longer_matches_is_left_out() -> None:
    """The DaemonSet controller removes an agent whose Node stopped matching: no stickiness."""
    labels = {"a": {"gpu": "yes"}, "b": {}}
    assert split_schedulable(
        {}, ["a", "b"], None, holding={"b"}, placement=({"gpu": "yes"}, labels)
    ) == (
        ["a"],
        ["b"],
    )
