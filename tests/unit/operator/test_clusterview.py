"""The operator's view of Nodes and NodeCaches from its watch indexes selects as the API does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelcache.api.k8s import LabelSelector, LabelSelectorRequirement
from modelcache.operator.clusterview import ClusterView, node_is_ready
from modelcache.operator.tolerations import daemon_pod_tolerations, parse_tolerations, taints_of

CHART_TOLERATIONS = '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]'

NODES = {
    "gpu-a": {"pool": "a100", "zone": "z1"},
    "gpu-b": {"pool": "a100", "zone": "z2", "drain": "true"},
    "gpu-c": {"pool": "h100"},
    "cpu-d": {},
}


def view(labels: dict[str, dict[str, str]] = NODES) -> ClusterView:
    return ClusterView.from_indexes(
        {name: [{"metadata": {"name": name}}] for name in labels},
        {name: [value] for name, value in labels.items()},
    )


def test_match_labels_and_expressions_select_like_the_api_server() -> None:
    selector = LabelSelector(
        match_labels={"pool": "a100"},
        match_expressions=[LabelSelectorRequirement(key="drain", operator="DoesNotExist")],
    )
    assert view().select(selector) == ["gpu-a"]
    not_in = LabelSelector(
        match_expressions=[LabelSelectorRequirement(key="zone", operator="NotIn", values=["z2"])]
    )
    assert view().select(not_in) == ["cpu-d", "gpu-a", "gpu-c"]  # NotIn holds where unset
    exists = LabelSelector(
        match_expressions=[LabelSelectorRequirement(key="zone", operator="Exists")]
    )
    assert view().select(exists) == ["gpu-a", "gpu-b"]
    assert view().select(LabelSelector()) == sorted(NODES), "an empty selector selects every node"


def test_from_indexes_keeps_every_cache_by_name() -> None:
    assert sorted(view().caches) == sorted(NODES)
    assert view().caches["gpu-b"]["metadata"]["name"] == "gpu-b"


labels = st.dictionaries(st.sampled_from(["pool", "zone", "gpu"]), st.sampled_from(["x", "y"]))


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), labels), labels)
def test_match_labels_selects_exactly_the_nodes_carrying_them(
    nodes: dict[str, dict[str, str]], wanted: dict[str, str]
) -> None:
    chosen = view(nodes).select(LabelSelector(match_labels=wanted))
    assert chosen == sorted(
        n for n, have in nodes.items() if all(have.get(k) == v for k, v in wanted.items())
    )


def test_readiness_comes_from_the_ready_condition_only() -> None:
    def status(ready: str | None) -> dict[str, object]:
        conditions = [{"type": "MemoryPressure", "status": "False"}]
        if ready is not None:
            conditions.append({"type": "Ready", "status": ready})
        return {"conditions": conditions}

    assert node_is_ready(status("True"))
    assert not node_is_ready(status("Unknown")), "a kubelet that stopped reporting"
    assert not node_is_ready(status("False"))
    assert node_is_ready(status(None)), "no Ready condition yet: not a failure"
    assert node_is_ready(None)
    indexed = ClusterView.from_indexes(
        {}, {"a": [{}], "b": [{}]}, {"a": [True], "b": [node_is_ready(status("Unknown"))]}
    )
    assert indexed.not_ready == frozenset({"b"})


def test_nodes_no_agent_runs_on_are_left_out_only_when_its_tolerations_are_known() -> None:
    control_plane = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    gpu = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    indexed = ClusterView.from_indexes(
        {},
        {"cp": [{}], "gpu-0": [{"pool": "a100"}], "cpu-0": [{}]},
        None,
        {"cp": [taints_of({"taints": control_plane})], "gpu-0": [taints_of({"taints": gpu})]},
    )
    agent = daemon_pod_tolerations(parse_tolerations(CHART_TOLERATIONS))
    assert indexed.schedulable(LabelSelector(), agent) == (["cpu-0", "gpu-0"], ["cp"])
    assert indexed.schedulable(LabelSelector(match_labels={"pool": "a100"}), agent) == (
        ["gpu-0"],
        [],
    ), "only the nodes the selector matches are counted as left out"
    assert indexed.schedulable(LabelSelector(), None) == (["cp", "cpu-0", "gpu-0"], [])


def test_nodes_the_agents_node_selector_does_not_match_are_left_out() -> None:
    """The chart's agent.nodeSelector (GPU nodes only): a CPU node runs no agent."""
    indexed = ClusterView.from_indexes(
        {}, {"gpu-0": [{"pool": "a100", "gpu": "yes"}], "cpu-0": [{"pool": "a100"}]}
    )
    only_gpu = {"gpu": "yes"}
    assert indexed.schedulable(LabelSelector(), None, agent_selector=only_gpu) == (
        ["gpu-0"],
        ["cpu-0"],
    )
    assert indexed.schedulable(LabelSelector(), None, agent_selector={}) == (
        ["cpu-0", "gpu-0"],
        [],
    ), "an empty nodeSelector (the chart's default) matches every node"
    assert indexed.schedulable(LabelSelector(), None, agent_selector={"gpu": "no"}) == (
        [],
        ["cpu-0", "gpu-0"],
    )
