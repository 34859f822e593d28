"""A ModelVersion's rollout as people read it: the status objects in, a view model out.

Pure (no I/O), so `modelcache status` renders from it and the tests check it alone. The
ModelVersion's status gives the phase, the flip order and the failures; each NodeCache's
status gives what its node holds, serves and is pulling (docs/operator.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from modelcache.api import (
    HeldVersion,
    ModelVersionSpec,
    ModelVersionStatus,
    NodeCacheStatus,
    NodeModelStatus,
)

Outcome = Literal["Available", "Degraded", "RolledBack"]


@dataclass(frozen=True)
class NodeRow:
    """One node of the rollout: what it serves, and how far it holds the target."""

    node: str
    wave: int | None  # the wave it flipped in; None: not flipped yet
    active: str | None  # the version its `current` points at
    serving: bool  # active is the target and every selected pod acknowledged it
    state: str  # the target's state on this node: Pending, Pulling, Cached, Failed
    bytes_done: int  # of the target, on this node's disk
    bytes_total: int
    # Where the pulled bytes came from, known only while a pull runs (a cached version's
    # report carries its size alone): `pulled` bytes seen, `bytes_from_peers` of them from
    # the site's peers, the rest from L3.
    pulled: int
    bytes_from_peers: int
    held: tuple[str, ...]  # versions it holds complete
    error: str | None  # why the rollout failed here, else the agent's last error

    @property
    def fraction(self) -> float:
        """How much of the target this node holds, 0..1."""
        if self.state == "Cached":
            return 1.0
        if self.bytes_total <= 0:
            return 0.0
        return min(1.0, self.bytes_done / self.bytes_total)


@dataclass(frozen=True)
class Wave:
    number: int
    nodes: tuple[str, ...]
    canary: bool
    done: bool  # every node of it serves the target or has failed


@dataclass(frozen=True)
class RolloutView:
    namespace: str
    name: str
    target: str  # spec.version
    stable: str | None  # what the rollout falls back to
    phase: str  # status.phase; Pending before the operator wrote any
    step: str | None  # the rollout's own phase: Prefetching, Canary, Waves, Complete, Failed
    ready: str  # "serving/total"
    observed: bool  # the status describes the current spec (generation and target)
    waves: tuple[Wave, ...]
    nodes: tuple[NodeRow, ...]
    failures: tuple[tuple[str, str], ...]  # (node, reason)
    problems: tuple[str, ...]  # conditions that report trouble, as one line each

    @property
    def pulled(self) -> int:
        """Bytes of the target whose source is known (seen while pulling)."""
        return sum(n.pulled for n in self.nodes)

    @property
    def bytes_from_peers(self) -> int:
        return sum(n.bytes_from_peers for n in self.nodes)

    @property
    def bytes_from_l3(self) -> int:
        return self.pulled - self.bytes_from_peers

    @property
    def l3_share(self) -> float | None:
        """The fraction of the pulled bytes that came from L3; None before any was seen."""
        return self.bytes_from_l3 / self.pulled if self.pulled else None

    @property
    def outcome(self) -> Outcome | None:
        """Where the rollout settled, or None while it goes on (or the operator has not
        seen the current spec yet: an Available of the previous version is not the end)."""
        if not self.observed:
            return None
        if self.phase in ("Available", "Degraded", "RolledBack"):
            return self.phase  # type: ignore[return-value]
        return None


def carry_sources(before: RolloutView | None, now: RolloutView) -> RolloutView:
    """`now`, with where each node's bytes came from as `before` saw it while the pull ran,
    for nodes whose report no longer says (their pull finished): what `--watch` keeps
    between two reads, so the L3 share outlives the pulls."""
    if before is None or before.target != now.target:
        return now
    seen = {r.node: r for r in before.nodes if r.pulled}
    rows = tuple(
        replace(r, pulled=seen[r.node].pulled, bytes_from_peers=seen[r.node].bytes_from_peers)
        if r.node in seen and r.pulled < seen[r.node].pulled
        else r
        for r in now.nodes
    )
    return replace(now, nodes=rows)


def waves_of(
    flipped: Sequence[str], wave_count: int, canary: int, max_unavailable: int
) -> list[tuple[str, ...]]:
    """The flip order cut into the planner's waves (operator/planner.py): one wave flips
    every node (a first rollout, a rollback); else the canary, then `max_unavailable` at a
    time (no canary: `max_unavailable` from the first)."""
    if not flipped:
        return []
    if wave_count <= 1:
        return [tuple(flipped)]
    size = max(1, max_unavailable)
    first = min(canary, size) if canary > 0 else size
    waves = [tuple(flipped[:first])]
    rest = list(flipped[first:])
    waves += [tuple(rest[i : i + size]) for i in range(0, len(rest), size)]
    return [w for w in waves if w]


def build_view(
    model_version: Mapping[str, Any], node_caches: Sequence[Mapping[str, Any]]
) -> RolloutView:
    """The view of one ModelVersion (its wire body) and the NodeCaches (theirs) it touches."""
    meta = model_version.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    spec = ModelVersionSpec.model_validate(model_version.get("spec") or {})
    status = ModelVersionStatus.model_validate(model_version.get("status") or {})
    rollout = status.rollout
    entries = _entries(node_caches, namespace, name)
    failures = tuple((f.node, f.reason) for f in rollout.failed) if rollout else ()
    failed = dict(failures)
    flipped = list(rollout.flipped) if rollout else []
    nodes = sorted(set(entries) | set(flipped) | set(failed))
    cut = waves_of(
        flipped,
        rollout.wave if rollout else 0,
        spec.rollout.canary,
        spec.rollout.max_unavailable_count(len(nodes)),
    )
    wave_of = {node: i + 1 for i, wave in enumerate(cut) for node in wave}
    rows = tuple(
        _row(n, spec.version, entries.get(n), wave_of.get(n), failed.get(n)) for n in nodes
    )
    serving = {r.node for r in rows if r.serving}
    canary_first = _canary_first(cut, spec, status)
    waves = tuple(
        Wave(
            number=i + 1,
            nodes=wave,
            canary=canary_first and i == 0,
            done=all(n in serving or n in failed for n in wave),
        )
        for i, wave in enumerate(cut)
    )
    generation = meta.get("generation")
    observed = (
        status.phase is not None
        and (generation is None or status.observed_generation == generation)
        and (rollout is None or rollout.target == spec.version)
    )
    return RolloutView(
        namespace=namespace,
        name=name,
        target=spec.version,
        stable=rollout.stable if rollout else None,
        phase=status.phase or "Pending",
        step=rollout.phase if rollout else None,
        ready=status.ready or f"{len(serving)}/{len(nodes)}",
        observed=observed,
        waves=waves,
        nodes=rows,
        failures=failures,
        problems=_problems(status),
    )


def _canary_first(
    cut: Sequence[tuple[str, ...]], spec: ModelVersionSpec, status: ModelVersionStatus
) -> bool:
    """Whether the first wave was a canary (operator/planner.py): a rollout from a stable
    version flips a canary first, unless it goes back to a version live before (a
    rollback), which flips every node at once, as does a first rollout."""
    rollout = status.rollout
    if rollout is None or not cut or spec.rollout.canary == 0 or rollout.stable is None:
        return False
    before = [h.version for h in status.history]
    if rollout.phase == "Complete" and before and before[-1] == rollout.target:
        before = before[:-1]  # its own entry, written when it completed
    return rollout.target not in before


def _entries(
    node_caches: Sequence[Mapping[str, Any]], namespace: str, name: str
) -> dict[str, NodeModelStatus | None]:
    """node -> its status entry for this model, for each NodeCache the operator gave it to
    (None: the agent has not reported it yet)."""
    found: dict[str, NodeModelStatus | None] = {}
    for cache in node_caches:
        node = str((cache.get("metadata") or {}).get("name", ""))
        models = (cache.get("spec") or {}).get("models") or []
        if not any(m.get("namespace") == namespace and m.get("name") == name for m in models):
            continue
        status = NodeCacheStatus.model_validate(cache.get("status") or {})
        found[node] = next(
            (m for m in status.models if m.namespace == namespace and m.name == name), None
        )
    return found


def _row(
    node: str, target: str, entry: NodeModelStatus | None, wave: int | None, failure: str | None
) -> NodeRow:
    held: HeldVersion | None = None
    if entry is not None:
        held = next((v for v in entry.versions if v.version == target), None)
    active = entry.active if entry else None
    reloaded = entry.reloaded_version if entry else None
    state = held.state if held else "Pending"
    total = held.bytes if held else 0
    done = min(held.bytes_done, total) if held and total else 0
    return NodeRow(
        node=node,
        wave=wave,
        active=active,
        serving=active == target and reloaded == target,
        state=state,
        bytes_done=total if state == "Cached" else done,
        bytes_total=total,
        pulled=done,
        bytes_from_peers=min(held.bytes_from_peers, done) if held else 0,
        held=tuple(v.version for v in entry.versions if v.state == "Cached") if entry else (),
        error=failure
        or (held.message if held and held.state == "Failed" else None)
        or (entry.last_error if entry else None),
    )


# Conditions whose True is trouble: the operator's failures, kstatus' Stalled.
_BAD_WHEN_TRUE = ("Degraded", "Stalled")


def _problems(status: ModelVersionStatus) -> tuple[str, ...]:
    return tuple(
        f"{c.type}: {c.reason}: {c.message}" if c.message else f"{c.type}: {c.reason}"
        for c in status.conditions
        if c.type in _BAD_WHEN_TRUE and c.status == "True"
    )
