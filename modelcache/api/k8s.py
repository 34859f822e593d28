"""Shared pieces of the custom resources: camelCase fields, selectors, conditions.

Field names are snake_case in Python and camelCase on the wire, as Kubernetes
users expect; `CRDModel.to_wire()` gives what the API server stores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "modelcache.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MODEL_VERSION_KIND = "ModelVersion"
MODEL_VERSIONS = "modelversions"  # the plural: what URLs, kopf handlers and RBAC name
NODE_CACHE_KIND = "NodeCache"
NODE_CACHES = "nodecaches"


class CRDModel(BaseModel):
    """Base of every resource part: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LabelSelectorRequirement(CRDModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(CRDModel):
    """The Kubernetes label selector: matchLabels AND every matchExpression."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(_requirement_holds(r, labels) for r in self.match_expressions)

    def to_label_selector_string(self) -> str:
        """`a=b,c in (d,e),!f` for list calls (field selectors cannot express this)."""
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        for req in self.match_expressions:
            if req.operator == "In":
                parts.append(f"{req.key} in ({','.join(req.values)})")
            elif req.operator == "NotIn":
                parts.append(f"{req.key} notin ({','.join(req.values)})")
            elif req.operator == "Exists":
                parts.append(req.key)
            else:
                parts.append(f"!{req.key}")
        return ",".join(parts)


def _requirement_holds(req: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    if req.operator == "In":
        return labels.get(req.key) in req.values
    if req.operator == "NotIn":
        return labels.get(req.key) not in req.values
    if req.operator == "Exists":
        return req.key in labels
    return req.key not in labels


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CRDModel):
    """A standard status condition (metav1.Condition's shape)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: dt.datetime
    observed_generation: Annotated[int, Field(ge=0)] | None = None


class SecretReference(CRDModel):
    """A Secret holding L3 credentials (keys: OSS_ACCESS_KEY_ID, AWS_ACCESS_KEY_ID, ...)."""

    name: str
    namespace: str | None = None


class Reload(CRDModel):
    """How the agent finds and calls the inference pods on its node (ModelVersion and NodeCache)."""

    pod_selector: LabelSelector
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # An absolute path only: no query, fragment or userinfo, which could carry a secret
    # into the status and events (docs/security.md).
    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:/%-]{0,255}$")] = (
        "/modelcache/reload"
    )
    timeout_seconds: Annotated[int, Field(ge=1)] = 30
