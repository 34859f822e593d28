"""The reload call, agent -> inference pod: the request and the answer, one definition for
the agent that sends it (`agent/reload.py`) and the runtime that answers it
(`runtime/endpoint.py`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_FIELD = 4096  # a model name, a version, a path: never longer on any node


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
    `kind` says which check refused it. Extra fields (timings, bytes) pass through."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ok: bool
    live_version: str | None = None
    reason: str | None = None
    kind: str | None = None
