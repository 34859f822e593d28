"""Which Nodes the agent DaemonSet can run on, judged by taints and tolerations.

A ModelVersion selects Nodes by label; a Node whose NoSchedule or NoExecute taint the
agent does not tolerate (a kubeadm or kind control plane) never runs an agent, so a
rollout counting it would wait forever. The operator is told the agent's tolerations
(`--agent-tolerations`, the chart passes `agent.tolerations`) and leaves such Nodes out,
matching as the scheduler does (k8s.io/api core/v1 `Toleration.ToleratesTaint`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_TOLERATIONS_BYTES = 64 * 1024  # a pod spec's list; far beyond any real one
MAX_TOLERATIONS = 256
MAX_KEY = 317  # a qualified name: a 253-character DNS prefix, "/", a 63-character name
MAX_VALUE = 63  # a label value
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
EXCLUDING = frozenset({"NoSchedule", "NoExecute"})  # PreferNoSchedule only discourages
OPERATORS = ("Exists", "Equal")
FIELDS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str = ""


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"  # the API's default when a pod spec leaves it out
    value: str = ""
    effect: str = ""  # empty: every effect

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' rule: the effect (if set) and the key (if set) must match; Exists
        then tolerates any value, Equal only its own (so `{operator: Exists}` with no key
        tolerates every taint)."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.operator == "Equal" and self.value == taint.value


# What the DaemonSet controller adds to every daemon pod (pkg/controller/daemon/util,
# AddOrUpdateDaemonPodTolerations): a cordoned or pressured Node keeps its agent.
# network-unavailable is added only to hostNetwork pods, which the agent is not.
DAEMONSET_TOLERATIONS = (
    Toleration("node.kubernetes.io/disk-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/memory-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/pid-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/unschedulable", "Exists", effect="NoSchedule"),
)
# The node lifecycle controller's taints for a NotReady or unreachable Node (NoSchedule,
# and NoExecute, which the DaemonSet controller tolerates so the agent stays). They say
# what the Ready condition says, which the operator already follows: such a Node stays
# selected and counts as NotReady (failed in a rollout in flight), not left out.
READINESS_TOLERATIONS = (
    Toleration("node.kubernetes.io/not-ready", "Exists"),
    Toleration("node.kubernetes.io/unreachable", "Exists"),
)


def untolerated(taints: Iterable[Taint], tolerations: Sequence[Toleration]) -> list[Taint]:
    """The taints that keep a pod with `tolerations` off the Node: NoSchedule and
    NoExecute ones that no toleration tolerates."""
    return [
        t
        for t in taints
        if t.effect in EXCLUDING and not any(tol.tolerates(t) for tol in tolerations)
    ]


def daemon_pod_tolerations(tolerations: Iterable[Toleration]) -> tuple[Toleration, ...]:
    """What decides whether a Node runs the agent: its pod template's tolerations, those
    the DaemonSet controller adds, and the readiness taints (judged by readiness)."""
    return (*tolerations, *DAEMONSET_TOLERATIONS, *READINESS_TOLERATIONS)


def split_schedulable(
    taints: Mapping[str, Sequence[Taint]],
    names: Iterable[str],
    tolerations: Sequence[Toleration] | None,
    holding: Collection[str] = (),
    placement: tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]] | None = None,
) -> tuple[list[str], list[str]]:
    """`names` split into the Nodes a daemon pod with `tolerations` runs on and those it
    does not, each sorted. `tolerations=None` (not known): every Node is kept.

    A Node in `holding` (its NodeCache already has this model) keeps it under a
    NoSchedule taint put on later (a maintenance taint): NoSchedule does not evict the
    agent already there, and leaving the Node out would delete the model under its pods.
    Only NoExecute, which evicts the agent, leaves such a Node out.

    `placement`: the agent DaemonSet's nodeSelector and every Node's labels; a Node it
    does not match runs no agent (the DaemonSet controller removes one already there)."""
    names = sorted(names)
    kept: list[str] = []
    left_out: list[str] = []
    for name in names:
        blocking = [] if tolerations is None else untolerated(taints.get(name, ()), tolerations)
        if name in holding:
            blocking = [t for t in blocking if t.effect == "NoExecute"]
        runs = not blocking and (placement is None or _matches(placement, name))
        (kept if runs else left_out).append(name)
    return kept, left_out


def _matches(
    placement: tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]], node: str
) -> bool:
    selector, labels = placement
    mine = labels.get(node, {})
    return all(mine.get(key) == value for key, value in selector.items())


MAX_NODE_SELECTOR_BYTES = 64 * 1024


def parse_node_selector(text: str) -> dict[str, str]:
    """The agent's nodeSelector as JSON (a pod spec's map of label to value); ValueError
    naming the entry when it is not one."""
    size = len(text.encode())
    if size > MAX_NODE_SELECTOR_BYTES:
        raise ValueError(f"nodeSelector: {size} bytes, at most {MAX_NODE_SELECTOR_BYTES}")
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"nodeSelector: not JSON: {error}") from None
    if items is None:
        return {}
    if not isinstance(items, dict):
        raise ValueError(f"nodeSelector: a JSON object expected, got {type(items).__name__}")
    for key, value in items.items():
        if not key or len(key) > MAX_KEY:
            raise ValueError(f"nodeSelector: key {key[:40]!r}: 1 to {MAX_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise ValueError(f"nodeSelector[{key!r}]: a string of at most {MAX_VALUE} characters")
    return dict(items)


def taints_of(spec: Mapping[str, Any] | None) -> tuple[Taint, ...]:
    """A Node's `spec.taints` (the API server validated them; a malformed entry is
    skipped rather than trusted)."""
    out = []
    for item in (spec or {}).get("taints") or []:
        if not isinstance(item, Mapping):
            continue
        key, effect, value = item.get("key"), item.get("effect"), item.get("value") or ""
        if isinstance(key, str) and isinstance(effect, str) and isinstance(value, str):
            out.append(Taint(key, effect, value))
    return tuple(out)


def parse_tolerations(text: str) -> tuple[Toleration, ...]:
    """A JSON list of tolerations as a pod spec writes them. ValueError naming the entry
    and the field when it is not one the API server would admit."""
    size = len(text.encode())
    if size > MAX_TOLERATIONS_BYTES:
        raise ValueError(f"tolerations: {size} bytes, at most {MAX_TOLERATIONS_BYTES}")
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"tolerations: not JSON: {error}") from None
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ValueError(f"tolerations: a JSON list expected, got {type(items).__name__}")
    if len(items) > MAX_TOLERATIONS:
        raise ValueError(f"tolerations: {len(items)} entries, at most {MAX_TOLERATIONS}")
    return tuple(_toleration(item, f"tolerations[{i}]") for i, item in enumerate(items))


def _toleration(item: Any, where: str) -> Toleration:
    """One entry, checked as the API server validates a pod's toleration."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: an object expected, got {type(item).__name__}")
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (known: {sorted(FIELDS)})")
    key = _string(item, "key", where, MAX_KEY)
    operator = _string(item, "operator", where, 16) or "Equal"
    value = _string(item, "value", where, MAX_VALUE)
    effect = _string(item, "effect", where, 32)
    if operator not in OPERATORS:
        raise ValueError(f"{where}.operator: {operator!r} is not Exists or Equal")
    if effect and effect not in EFFECTS:
        raise ValueError(f"{where}.effect: {effect!r} is not one of {', '.join(EFFECTS)}")
    if not key and operator != "Exists":
        raise ValueError(f"{where}.operator: must be Exists when the key is empty")
    if operator == "Exists" and value:
        raise ValueError(f"{where}.value: must be empty when the operator is Exists")
    seconds = item.get("tolerationSeconds")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ValueError(f"{where}.tolerationSeconds: an integer expected")
        if effect != "NoExecute":
            raise ValueError(f"{where}.tolerationSeconds: only with effect NoExecute")
    return Toleration(key, operator, value, effect)


def _string(item: dict[str, Any], field: str, where: str, limit: int) -> str:
    value = item.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}.{field}: a string expected, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{where}.{field}: {len(value)} characters, at most {limit}")
    return value
