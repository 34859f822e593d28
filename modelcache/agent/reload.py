"""The reload call (agent -> inference pod): POST {model, version, path}, read the verdict."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass(frozen=True)
class ReloadResult:
    url: str
    ok: bool
    status: int | None
    live_version: str | None
    reason: str | None
    seconds: float

    @property
    def answered(self) -> bool:
        """The pod answered (a refusal is a verdict); False: not listening yet, or gone."""
        return self.status is not None


def call_reload(
    url: str, *, model: str, version: str, path: Path, timeout: float = 30.0
) -> ReloadResult:
    """One reload call; never raises: a refusal or an unreachable pod is a result to report."""
    started = time.monotonic()
    body = {"model": model, "version": version, "path": str(path)}
    try:
        response = requests.post(url, json=body, timeout=timeout)
    except requests.RequestException as error:
        return ReloadResult(
            url, False, None, None, f"unreachable: {error}", time.monotonic() - started
        )
    seconds = time.monotonic() - started
    try:
        answer = response.json()
    except (ValueError, json.JSONDecodeError):
        answer = {}
    live = answer.get("live_version") if isinstance(answer, dict) else None
    reason = answer.get("reason") if isinstance(answer, dict) else None
    ok = response.ok and bool(answer.get("ok", True) if isinstance(answer, dict) else True)
    if not ok and reason is None:
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
    return ReloadResult(url, ok, response.status_code, live, reason, seconds)
