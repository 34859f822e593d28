"""`modelcache rollback NAME -n NS`: set spec.version to the version that was live before.

The files are still cached on every node (retention keeps the rollback target),
so the operator's rollout is a flip everywhere, with no download.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from kubernetes import client

from modelcache.api import GROUP, MODEL_VERSIONS, VERSION, HistoryEntry, ModelVersionStatus


class NoRollbackTarget(LookupError):  # noqa: N818 - reads as what it is
    """The history holds no other version to go back to."""


def previous_version(history: Sequence[HistoryEntry], current: str) -> str:
    """The most recent version in `history` that is not `current`."""
    for entry in reversed(history):
        if entry.version != current:
            return entry.version
    raise NoRollbackTarget(f"no version before {current} in the history")


def rollback_model_version(api: client.ApiClient, namespace: str, name: str) -> tuple[str, str]:
    """Patch spec.version to the previous version; returns (from, to)."""
    custom = client.CustomObjectsApi(api)
    body = cast(
        dict[str, Any],
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, MODEL_VERSIONS, name),
    )
    current = str(body["spec"]["version"])
    status = ModelVersionStatus.model_validate(body.get("status") or {})
    try:
        target = previous_version(status.history, current)
    except NoRollbackTarget:
        raise NoRollbackTarget(
            f"ModelVersion {namespace}/{name} has no earlier live version than {current}"
        ) from None
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, MODEL_VERSIONS, name, {"spec": {"version": target}}
    )
    return current, target
