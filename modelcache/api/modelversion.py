"""ModelVersion: which model, which version, on which nodes, rolled out how.

The user's one resource. The CEL rules here are enforced by the API server, so a
bad spec is refused at `kubectl apply` with a message that names the problem.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from modelcache.api.k8s import Condition, CRDModel, LabelSelector, Reload, SecretReference
from modelcache.api.names import check_version

SCHEMES_PATTERN = r"^(oss|s3|https?|file)://"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
PERCENT = re.compile(r"^(100|[1-9][0-9]?)%$")


def _cel(rule: str, message: str) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


class Source(CRDModel):
    url: Annotated[
        str,
        Field(
            max_length=2048,
            json_schema_extra=_cel(
                f"self.matches('{SCHEMES_PATTERN}')",
                "source.url must start with oss://, s3://, http://, https:// or file://",
            ),
        ),
    ]
    credentials_secret: SecretReference | None = None


class Rollout(CRDModel):
    """Prefetch everywhere, then `canary` nodes, then waves of at most `maxUnavailable`."""

    canary: Annotated[int, Field(ge=0)] = 1
    max_unavailable: Annotated[
        int | str,
        Field(
            json_schema_extra={
                "x-kubernetes-int-or-string": True,
                **_cel(
                    "type(self) == int ? self > 0 : self.matches('^(100|[1-9][0-9]?)%$')",
                    "rollout.maxUnavailable must be a count >= 1 or a percentage from 1% to 100%",
                ),
            }
        ),
    ] = 1
    failure_threshold: Annotated[int, Field(ge=0)] = 0
    wave_timeout_seconds: Annotated[int, Field(ge=1)] = 600

    @field_validator("max_unavailable")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if (isinstance(value, int) and value < 1) or (
            isinstance(value, str) and not PERCENT.fullmatch(value)
        ):
            raise ValueError("maxUnavailable must be a count >= 1 or a percentage from 1% to 100%")
        return value

    def max_unavailable_count(self, total_nodes: int) -> int:
        """The wave size bound for `total_nodes` nodes: at least 1."""
        if isinstance(self.max_unavailable, int):
            return self.max_unavailable
        percent = int(self.max_unavailable.rstrip("%"))
        return max(1, total_nodes * percent // 100)


class ModelVersionSpec(CRDModel):
    source: Source
    version: Annotated[
        str,
        Field(
            max_length=128,
            json_schema_extra=_cel(
                f"!self.contains('/') && !self.contains('..') && self.matches('{VERSION_PATTERN}')",
                "version must be 1-128 of letters, digits, '.', '_', '+', '-', without '/' or '..'",
            ),
        ),
    ]
    prefetch: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list)
    # Kept on every node whatever `retain` says, once held (a known-good fallback).
    pin: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list)
    node_selector: LabelSelector = LabelSelector()
    retain: Annotated[
        int, Field(json_schema_extra=_cel("self >= 1", "retain must be at least 1"))
    ] = 5
    rollout: Rollout = Rollout()
    reload: Reload | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_version(value)

    @field_validator("prefetch", "pin")
    @classmethod
    def _prefetch(cls, values: list[str]) -> list[str]:
        return [check_version(v) for v in values]


class VersionCount(CRDModel):
    """How many selected nodes hold / serve / failed one version."""

    version: str
    cached: int = 0
    active: int = 0
    failed: int = 0


class HistoryEntry(CRDModel):
    version: str
    activated_at: dt.datetime


RolloutPhase = Literal["Prefetching", "Canary", "Waves", "Complete", "Failed"]


class NodeFailure(CRDModel):
    node: str
    reason: str


class RolloutState(CRDModel):
    """The operator's memory of a rollout, kept in status so a restarted operator resumes it."""

    target: str
    stable: str | None = None
    phase: RolloutPhase = "Prefetching"
    flipped: list[str] = Field(default_factory=list)
    failed: list[NodeFailure] = Field(default_factory=list)
    wave: int = 0
    wave_started_at: dt.datetime | None = None
    started_at: dt.datetime | None = None


Phase = Literal["Pending", "Prefetching", "RollingOut", "Available", "Degraded", "RolledBack"]


class ModelVersionStatus(CRDModel):
    observed_generation: int | None = None
    phase: Phase | None = None
    ready: str | None = None  # "active/total", for the READY column
    current_version: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    versions: list[VersionCount] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    rollout: RolloutState | None = None
