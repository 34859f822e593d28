"""The reload call, agent -> inference pod, one definition for both ends: the request the
agent sends (`agent/reload.py`), the answer the runtime gives (`runtime/endpoint.py`), and
the outcome of one call as the agent saw it, which is also its L1_RELOAD event and, through
`to_pod_reload`, the pod's entry in the NodeCache status."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from modelcache.api.events import EventKind, ModelEvent
from modelcache.api.nodecache import PodReload
from modelcache.api.urls import redact_url

MAX_FIELD = 4096  # a model name, a version, a path: never longer on any node
BUSY_STATUSES = (429, 503)
"""HTTP statuses of a pod that is there but cannot take the call now: retried, not failed."""


class ReloadRequest(BaseModel):
    """POSTed as JSON: which model to re-read, and the version the agent expects its
    `current` to name. A nudge: the pod loads what `current` names, never a caller's
    path (`path`, sent by older agents, is accepted and ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Annotated[str, Field(min_length=1, max_length=MAX_FIELD)]
    version: Annotated[str, Field(min_length=1, max_length=MAX_FIELD)]
    path: Annotated[str | None, Field(max_length=MAX_FIELD)] = None


class ReloadAnswer(BaseModel):
    """The pod's verdict. `ok` false with a `reason`: refused (the live version stays);
    `kind` says which check refused it. `ok` true: `live_version` is live, with what the
    swap took (`bytes`, `timings`). Other fields (a newer or another runtime's) pass through."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ok: bool
    model: str | None = None
    live_version: str | None = None
    previous_version: str | None = None
    reason: str | None = None
    kind: str | None = None
    path: str | None = None  # the version directory that was loaded
    bytes: int | None = None
    unchanged: bool | None = None  # the version was live already: nothing copied
    timings: dict[str, float] | None = None

    @classmethod
    def refused(
        cls, reason: str, *, kind: str | None = None, live: str | None = None
    ) -> ReloadAnswer:
        """A refusal: the reason, the check that refused (if one did) and what stays live."""
        if kind is None:
            return cls(ok=False, reason=reason, live_version=live)
        return cls(ok=False, reason=reason, kind=kind, live_version=live)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body: the fields the answer was built with, `None` ones included (a
        refusal says `"live_version": null` when nothing is live)."""
        return self.model_dump(mode="json", exclude_unset=True)


@dataclass(frozen=True, kw_only=True)
class ReloadOutcome(ModelEvent):
    """One reload call as the agent saw it: the pod's verdict, or why there was none.
    `status` is the HTTP status (None: no answer); `reason` is bounded by the caller."""

    kind = EventKind.L1_RELOAD
    target: str  # the pod's name, or the URL in standalone mode
    url: str
    ok: bool
    status: int | None
    live_version: str | None
    reason: str | None
    seconds: float

    def __post_init__(self) -> None:  # a reload URL's user:password@ or ?token=: never logged
        object.__setattr__(self, "url", redact_url(self.url))
        object.__setattr__(self, "target", redact_url(self.target))

    @property
    def answered(self) -> bool:
        """The pod gave a verdict (a refusal is one); False: not listening yet, gone, or
        busy (429, 503): to be retried, not a failure."""
        return self.status is not None and self.status not in BUSY_STATUSES

    def to_pod_reload(self, at: dt.datetime) -> PodReload:
        """This call as the NodeCache status reports it, recorded `at`."""
        return PodReload(
            pod=self.target,
            version=self.version,
            ok=self.ok,
            reason=self.reason,
            answered=self.answered,
            at=at,
        )
