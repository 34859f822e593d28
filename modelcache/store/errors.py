"""What the store raises; agents catch `StoreError` and report its message as-is, so each
message names the model, version or path it is about."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store failure."""


class VersionNotInstalled(StoreError):  # noqa: N818 - names fixed by the store's API
    """The version is not (completely) installed on this node."""


class DiskFull(StoreError):  # noqa: N818 - names fixed by the store's API
    """A pull would cross the configured high watermark or eat into the reserve."""


class ProtectedVersion(StoreError):  # noqa: N818 - names fixed by the store's API
    """Refused: the version is live (current), the rollback target (previous) or pinned."""
