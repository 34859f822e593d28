"""NodeCache: one per node, named after it. The operator writes spec, the node's agent status.

Cluster-scoped because a node is; each agent watches only its own object.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field

from modelcache.api.k8s import CRDModel, Reload, SecretReference


class NodeModel(CRDModel):
    """What this node must hold of one ModelVersion, and which version must be live."""

    namespace: str
    name: str
    source: str
    credentials_secret: SecretReference | None = None
    versions: list[str]
    active: str | None = None
    retain: Annotated[int, Field(ge=1)] = 5
    pins: list[str] = Field(default_factory=list)  # never removed by retention
    reload: Reload | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class NodeCacheSpec(CRDModel):
    models: list[NodeModel] = Field(default_factory=list)


VersionState = Literal["Pending", "Pulling", "Cached", "Failed"]


class HeldVersion(CRDModel):
    version: str
    state: VersionState
    bytes: Annotated[int, Field(ge=0)] = 0
    bytes_done: Annotated[int, Field(ge=0)] = 0
    # Of the files done so far, the bytes that came from the site's peers rather than
    # L3 (fan-out, docs/fanout.md): where this pull gets its bytes.
    bytes_from_peers: Annotated[int, Field(ge=0)] = 0
    message: str | None = None


class PodReload(CRDModel):
    pod: str
    version: str
    ok: bool
    reason: str | None = None
    # False: the pod did not answer (still starting, restarting). Retried by the agent and
    # not a failure of the rollout, which gives up on it only at the wave timeout.
    answered: bool = True
    at: dt.datetime


class NodeModelStatus(CRDModel):
    namespace: str
    name: str
    active: str | None = None
    versions: list[HeldVersion] = Field(default_factory=list)
    bytes_per_second: float | None = None
    last_error: str | None = None
    reloads: list[PodReload] = Field(default_factory=list)
    reloaded_version: str | None = None  # set once every selected pod has acknowledged `active`


class DiskStatus(CRDModel):
    total_bytes: int = 0
    free_bytes: int = 0
    blob_bytes: int = 0


class PeerStatus(CRDModel):
    """Where this node's agent serves its peers, and its site (docs/fanout.md): the site's
    other agents take verified pieces from `url`."""

    url: Annotated[str, Field(max_length=256)]
    site: Annotated[str, Field(max_length=63)] = ""


class NodeCacheStatus(CRDModel):
    observed_generation: int | None = None
    models: list[NodeModelStatus] = Field(default_factory=list)
    disk: DiskStatus | None = None
    peer: PeerStatus | None = None
    updated_at: dt.datetime | None = None
