"""The reload call (agent -> inference pod): POST {model, version}, read the verdict."""

from __future__ import annotations

import contextlib
import time

import requests
import urllib3
from pydantic import ValidationError

from modelcache.api import ReloadAnswer, ReloadOutcome, ReloadRequest

MAX_ANSWER_BYTES = 64 * 1024
MAX_REASON_CHARS = 1000


def call_reload(
    url: str, *, model: str, version: str, timeout: float = 30.0, target: str | None = None
) -> ReloadOutcome:
    """One reload call; never raises: a refusal or an unreachable pod is an outcome to report.
    `target` names the pod in the outcome (default: the URL)."""
    started = time.monotonic()
    body = ReloadRequest(model=model, version=version).model_dump(exclude_none=True)

    def outcome(
        ok: bool, status: int | None, live: str | None, reason: str | None
    ) -> ReloadOutcome:
        return ReloadOutcome(
            model=model,
            version=version,
            target=url if target is None else target,
            url=url,
            ok=ok,
            status=status,
            live_version=live,
            # The reason goes into the NodeCache status and events: a bounded line.
            reason=reason[:MAX_REASON_CHARS] if reason is not None else None,
            seconds=round(time.monotonic() - started, 3),
        )

    try:
        with requests.post(url, json=body, timeout=timeout, stream=True) as response:
            # A verdict is a few hundred bytes: read no more than a bound of what a pod sends.
            content = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        return outcome(False, None, None, f"unreachable: {error}")
    answer: ReloadAnswer | None = None  # not the contract's answer: judged by the status alone
    if len(content) <= MAX_ANSWER_BYTES:
        with contextlib.suppress(ValidationError):
            answer = ReloadAnswer.model_validate_json(content)
    ok = response.ok and (answer is None or answer.ok)
    live = answer.live_version if answer is not None else None
    reason = answer.reason if answer is not None else None
    if not ok and reason is None:
        reason = f"HTTP {response.status_code}: {content[:200].decode(errors='replace')}"
    return outcome(ok, response.status_code, live, reason)
