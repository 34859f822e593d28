"""Between NodeCache objects and the planner: read observations out, write assignments in.

A NodeCache holds entries for every ModelVersion that selects the node; the
operator only ever rewrites the entry of the ModelVersion it is reconciling.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace

from modelcache.api import ModelVersionSpec, NodeCacheSpec, NodeCacheStatus, NodeModel
from modelcache.operator.planner import Assignment, NodeObservation


def observation(status: NodeCacheStatus | None, namespace: str, name: str) -> NodeObservation:
    """What the node's agent reports about one model; nothing reported -> empty."""
    if status is None:
        return NodeObservation()
    for model in status.models:
        if (model.namespace, model.name) == (namespace, name):
            return NodeObservation(
                cached=frozenset(v.version for v in model.versions if v.state == "Cached"),
                failed={
                    v.version: v.message or "failed" for v in model.versions if v.state == "Failed"
                },
                active=model.active,
                reloaded=model.reloaded_version,
                reload_error=next(
                    (
                        r.reason or "reload failed"
                        for r in model.reloads
                        if not r.ok and r.answered and r.version == model.active
                    ),
                    None,
                ),
            )
    return NodeObservation()


def desired_entry(
    namespace: str, name: str, spec: ModelVersionSpec, assignment: Assignment
) -> NodeModel:
    return NodeModel(
        namespace=namespace,
        name=name,
        source=spec.source.url,
        credentials_secret=spec.source.credentials_secret,
        versions=list(assignment.versions),
        active=assignment.active,
        retain=spec.retain,
        pins=list(spec.pin),
        reload=spec.reload,
    )


def with_entry(spec: NodeCacheSpec, entry: NodeModel) -> NodeCacheSpec:
    """`spec` with this model's entry replaced (or added); other models untouched, order kept."""
    models = [m for m in spec.models if m.key != entry.key]
    position = next((i for i, m in enumerate(spec.models) if m.key == entry.key), len(models))
    models.insert(position, entry)
    return NodeCacheSpec(models=models)


def without_entry(spec: NodeCacheSpec, namespace: str, name: str) -> NodeCacheSpec:
    return NodeCacheSpec(models=[m for m in spec.models if m.key != f"{namespace}/{name}"])


def observations(
    statuses: Mapping[str, NodeCacheStatus | None],
    namespace: str,
    name: str,
    not_ready: AbstractSet[str] = frozenset(),
) -> dict[str, NodeObservation]:
    observed = {node: observation(status, namespace, name) for node, status in statuses.items()}
    return {
        node: replace(seen, not_ready=True) if node in not_ready else seen
        for node, seen in observed.items()
    }
