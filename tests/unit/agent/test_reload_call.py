"""The agent's reload call reads a bounded verdict: a pod answering megabytes gets a
refusal whose reason fits a NodeCache status, not a copy of what it sent."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelcache.agent import EventLog
from modelcache.agent.reload import MAX_REASON_CHARS, call_reload
from modelcache.api import NodeModelStatus, PodReload

Answer = Callable[[], tuple[int, bytes]]


@pytest.fixture
def pod() -> Iterator[tuple[str, list[Answer]]]:
    answers: list[Answer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            status, body = answers[0]()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the agent hangs up mid-answer once it has read its bound: as it should

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/reload", answers
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "answer",
    [
        lambda: (409, json.dumps({"ok": False, "reason": "x" * 50_000}).encode()),
        lambda: (409, json.dumps({"ok": False, "reason": "y" * 5_000_000}).encode()),
        lambda: (500, b"z" * 5_000_000),
    ],
    ids=["a long reason", "a verdict past the bound", "megabytes of garbage"],
)
def test_a_huge_answer_is_a_bounded_refusal(pod: tuple[str, list[Answer]], answer: Answer) -> None:
    url, answers = pod
    answers.append(answer)
    result = call_reload(url, model="studio/lora", version="v2")
    assert not result.ok
    assert result.answered
    assert result.reason is not None
    assert 0 < len(result.reason) <= MAX_REASON_CHARS


def test_a_verdict_is_read_whole(pod: tuple[str, list[Answer]]) -> None:
    url, answers = pod
    answers.append(lambda: (200, json.dumps({"ok": True, "live_version": "v2"}).encode()))
    result = call_reload(url, model="studio/lora", version="v2")
    assert result.ok
    assert result.live_version == "v2"
    assert result.reason is None


def test_one_call_is_one_outcome_for_the_result_the_event_and_the_status(
    pod: tuple[str, list[Answer]], tmp_path: Path
) -> None:
    """What the agent knows of a call is one value: what `call_reload` returns is the L1_RELOAD
    line of the event log (its keys unchanged) and gives the pod's NodeCache status entry."""
    url, answers = pod
    answers.append(lambda: (409, json.dumps({"ok": False, "reason": "rank 16 > 8"}).encode()))
    outcome = call_reload(url, model="studio/lora", version="v2", target="studio-0")
    assert (outcome.target, outcome.url, outcome.status) == ("studio-0", url, 409)
    log = EventLog(tmp_path / "events.jsonl")
    record = log.emit(outcome)
    log.close()
    assert record["event"] == "L1_RELOAD"
    assert set(record) == {
        "ts",
        "event",
        "model",
        "version",
        "target",
        "url",
        "ok",
        "status",
        "live_version",
        "reason",
        "seconds",
    }
    at = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    entry = outcome.to_pod_reload(at)
    assert entry == PodReload(
        pod="studio-0", version="v2", ok=False, reason="rank 16 > 8", answered=True, at=at
    )
    assert NodeModelStatus(namespace="studio", name="lora", reloads=[entry]).to_wire()[
        "reloads"
    ] == [
        {
            "pod": "studio-0",
            "version": "v2",
            "ok": False,
            "reason": "rank 16 > 8",
            "answered": True,
            "at": "2026-01-02T00:00:00Z",
        }
    ]


@pytest.mark.parametrize(("status", "answered"), [(429, False), (503, False), (500, True)])
def test_a_busy_pod_has_not_answered_yet(
    pod: tuple[str, list[Answer]], status: int, answered: bool
) -> None:
    url, answers = pod
    answers.append(lambda: (status, b'{"ok": false, "reason": "busy"}'))
    outcome = call_reload(url, model="studio/lora", version="v2")
    assert outcome.target == url  # a standalone agent names a target by its URL
    assert (outcome.ok, outcome.answered) == (False, answered)
    assert outcome.to_pod_reload(dt.datetime.now(dt.UTC)).answered is answered
