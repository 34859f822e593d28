"""The reload call (agent -> inference pod): POST {model, version}, read the verdict."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests
from pydantic import ValidationError

from modelcache.api.reload import ReloadAnswer, ReloadRequest


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
        """The pod gave a verdict (a refusal is one); False: not listening yet, gone, or
        busy (429, 503): to be retried, not a failure."""
        return self.status is not None and self.status not in (429, 503)


def call_reload(url: str, *, model: str, version: str, timeout: float = 30.0) -> ReloadResult:
    """One reload call; never raises: a refusal or an unreachable pod is a result to report."""
    started = time.monotonic()
    body = ReloadRequest(model=model, version=version).model_dump(exclude_none=True)
    try:
        response = requests.post(url, json=body, timeout=timeout)
    except requests.RequestException as error:
        return ReloadResult(
            url, False, None, None, f"unreachable: {error}", time.monotonic() - started
        )
    seconds = time.monotonic() - started
    try:
        answer: ReloadAnswer | None = ReloadAnswer.model_validate_json(response.content)
    except ValidationError:
        answer = None  # not the contract's answer: judged by the status code alone
    ok = response.ok and (answer is None or answer.ok)
    live = answer.live_version if answer is not None else None
    reason = answer.reason if answer is not None else None
    if not ok and reason is None:
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
    return ReloadResult(url, ok, response.status_code, live, reason, seconds)
