"""The kube client's two failures: no usable configuration, and an error from the server."""

from __future__ import annotations


class KubeconfigError(Exception):
    """No usable cluster configuration (missing file, context, or an unsupported auth kind)."""


class ApiError(Exception):
    """The API server answered with an error status (or a watch delivered an ERROR event)."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"({status}) {reason}" + (f": {body}" if body else ""))
        self.status = status
        self.reason = reason
        self.body = body
