"""A reload call's URL goes into events.jsonl (and stdout) with any user:password@ or query
token hidden, as every URL modelcache prints (`redact_url`)."""

from __future__ import annotations

from pathlib import Path

from modelcache.agent.events import EventLog
from modelcache.api.reload import ReloadOutcome


def test_a_reload_event_never_carries_the_urls_credentials_or_token(tmp_path: Path) -> None:
    url = "http://user:PASSW0RD@10.0.0.7:8000/modelcache/reload?token=T0KEN"
    log = EventLog(tmp_path / "events.jsonl")
    record = log.emit(
        ReloadOutcome(
            model="studio/lora",
            version="v2",
            target=url,  # the standalone agent names a target by its URL
            url=url,
            ok=True,
            status=200,
            live_version="v2",
            reason=None,
            seconds=0.01,
        )
    )
    log.close()
    written = (tmp_path / "events.jsonl").read_text()
    for secret in ("PASSW0RD", "T0KEN", "user:"):
        assert secret not in written
    assert record["url"] == record["target"] == "http://***@10.0.0.7:8000/modelcache/reload?***"


def test_a_pod_name_as_target_is_kept() -> None:
    event = ReloadOutcome(
        model="studio/lora",
        version="v2",
        target="studio-0",
        url="http://10.0.0.7:8000/modelcache/reload",
        ok=True,
        status=200,
        live_version="v2",
        reason=None,
        seconds=0.01,
    )
    assert (event.target, event.url) == ("studio-0", "http://10.0.0.7:8000/modelcache/reload")
