"""The agent's reload call reads a bounded verdict: a pod answering megabytes gets a
refusal whose reason fits a NodeCache status, not a copy of what it sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelcache.agent.reload import MAX_REASON_CHARS, call_reload

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
