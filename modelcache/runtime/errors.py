"""`SwapRefused`: why a version was not made live (the live one is untouched whenever it is raised).

`kind` is a short, fixed word for metric labels and for callers that branch on it;
the message names the exact key, layer, file or number, so an operator reading the
agent's report knows what to fix without opening the pod's log.
"""

from __future__ import annotations

from typing import Literal

RefusalKind = Literal[
    "request",  # a malformed reload call
    "model",  # this pod does not serve the model named in the call
    "path",  # the version directory is missing or outside the allowed root
    "current",  # the node's `current` link is missing or not the store's versions/<v>
    "config",  # the runtime cannot serve reload calls as configured (no root)
    "manifest",  # manifest.json is missing, unreadable or names another version
    "file",  # the adapter file is missing or not the size the manifest says
    "checksum",  # sha256 differs from the manifest
    "format",  # not a valid safetensors file / adapter config
    "settings",  # rank, alpha, target modules or an unsupported option
    "key",  # a missing or unexpected tensor
    "shape",
    "dtype",
    "rank",
    "busy",  # in-flight requests did not drain in time
    "io",
]


class SwapRefused(Exception):  # noqa: N818 - a refusal, not an error of ours
    """A version that cannot be swapped in; `reason` is the human-readable why."""

    def __init__(self, kind: RefusalKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: RefusalKind = kind
        self.reason = reason


class TornWeightsError(RuntimeError):
    """The copy into the live slots failed partway, so they hold parts of two versions.

    Raised by that swap and then by every request until a swap succeeds: a pod that
    refuses requests fails its readiness and gets the agent's attention; one that
    silently serves a blend of two adapters does not."""
