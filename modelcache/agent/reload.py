"""The reload call (agent -> inference pod): POST {model, version}, read the verdict."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import requests
import urllib3
from pydantic import ValidationError

from modelcache.api.reload import ReloadAnswer, ReloadRequest

MAX_ANSWER_BYTES = 64 * 1024
MAX_REASON_CHARS = 1000


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
        with requests.post(url, json=body, timeout=timeout, stream=True) as response:
            # A verdict is a few hundred bytes: read no more than a bound of what a pod sends.
            content = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        return ReloadResult(
            url, False, None, None, f"unreachable: {error}", time.monotonic() - started
        )
    seconds = time.monotonic() - started
    answer: ReloadAnswer | None = None  # not the contract's answer: judged by the status alone
    if len(content) <= MAX_ANSWER_BYTES:
        with contextlib.suppress(ValidationError):
            answer = ReloadAnswer.model_validate_json(content)
    ok = response.ok and (answer is None or answer.ok)
    live = answer.live_version if answer is not None else None
    reason = answer.reason if answer is not None else None
    if not ok and reason is None:
        reason = f"HTTP {response.status_code}: {content[:200].decode(errors='replace')}"
    # The reason goes into the NodeCache status and events: a bounded line.
    reason = reason[:MAX_REASON_CHARS] if reason is not None else None
    return ReloadResult(url, ok, response.status_code, live, reason, seconds)
