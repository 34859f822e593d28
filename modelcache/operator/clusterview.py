"""`ClusterView`: the Nodes and NodeCaches the operator's watches already hold.

A reconcile needs every selected Node and every NodeCache. LISTing both for every
step of every ModelVersion costs O(nodes) per step on the API server and in the
operator (at 500 nodes and 20 rollouts, most of a core while they merely wait). kopf
keeps both in indexes fed by its watches, filled before any daemon starts; a view is
a snapshot of them taken on the event loop and handed to the reconcile thread. A
stale NodeCache in it costs a 409 and a re-read when written, never a lost write.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelcache.api.k8s import LabelSelector
from modelcache.operator.tolerations import Taint, Toleration, split_schedulable


@dataclass(frozen=True)
class ClusterView:
    caches: Mapping[str, dict[str, Any]]  # NodeCache name (= node name) -> its body
    node_labels: Mapping[str, Mapping[str, str]]  # node name -> its labels
    not_ready: frozenset[str] = frozenset()  # nodes whose Ready condition is not True
    node_taints: Mapping[str, Sequence[Taint]] = field(default_factory=dict)

    def select(self, selector: LabelSelector) -> list[str]:
        """The nodes `selector` matches, by name (the API server's label semantics)."""
        return sorted(n for n, labels in self.node_labels.items() if selector.matches(labels))

    def schedulable(
        self,
        selector: LabelSelector,
        tolerations: Sequence[Toleration] | None,
        holding: Collection[str] = (),
        agent_selector: Mapping[str, str] | None = None,
    ) -> tuple[list[str], list[str]]:
        """The nodes `selector` matches split into those an agent with `tolerations` (and
        `agent_selector`, its DaemonSet's nodeSelector) runs on and those it does not
        (None: unknown, none left out); `holding`: see `split_schedulable`."""
        placement = None if agent_selector is None else (agent_selector, self.node_labels)
        return split_schedulable(
            self.node_taints, self.select(selector), tolerations, holding, placement
        )

    @classmethod
    def from_indexes(
        cls,
        caches: Mapping[str, Iterable[dict[str, Any]]],
        node_labels: Mapping[str, Iterable[Mapping[str, str]]],
        node_ready: Mapping[str, Iterable[bool]] | None = None,
        node_taints: Mapping[str, Iterable[Sequence[Taint]]] | None = None,
    ) -> ClusterView:
        """From kopf indexes keyed by name (one value per key: names are unique)."""
        return cls(
            caches={name: body for name, values in caches.items() for body in values},
            node_labels={name: labels for name, values in node_labels.items() for labels in values},
            not_ready=frozenset(
                name for name, values in (node_ready or {}).items() if not all(values)
            ),
            node_taints={
                name: taints for name, values in (node_taints or {}).items() for taints in values
            },
        )


def node_is_ready(status: Mapping[str, Any] | None) -> bool:
    """False only when the Node reports a Ready condition that is not True (a kubelet that
    stopped reporting turns Unknown); a Node with no conditions yet counts as ready."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return True
