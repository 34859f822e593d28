"""The reload call over real HTTP, and the ASGI route driven by a minimal ASGI server stand-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.agent.reload import call_reload
from modelcache.runtime import LoraRuntime, ReloadServer, ReloadService, asgi_app
from modelcache.store import Store
from tests.unit.runtime.support import MODEL, install_version, make_adapter

NAME = str(MODEL)


@pytest.fixture
def versions(store: Store, tmp_path: Path) -> dict[str, Path]:
    good = install_version(store, "v1", make_adapter(1).files(tmp=tmp_path))
    bad = install_version(store, "v2", make_adapter(2, rank=16).files(tmp=tmp_path))
    return {"good": good, "bad": bad}


@pytest.fixture
def server(runtime: LoraRuntime) -> Iterator[ReloadServer]:
    with ReloadServer(ReloadService([runtime]), host="127.0.0.1", port=0) as running:
        yield running


def test_reload_over_http(
    server: ReloadServer, runtime: LoraRuntime, versions: dict[str, Path]
) -> None:
    url = server.url()
    good = {"model": NAME, "version": "v1", "path": str(versions["good"])}
    answer = requests.post(url, json=good, timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert body["ok"] is True
    assert body["live_version"] == "v1"
    assert set(body["timings"]) >= {"read_s", "verify_s", "stage_s", "swap_s"}
    assert runtime.live_version == "v1"

    bad = {"model": NAME, "version": "v2", "path": str(versions["bad"])}
    answer = requests.post(url, json=bad, timeout=30)
    assert answer.status_code == 409
    body = answer.json()
    assert body["ok"] is False
    assert body["live_version"] == "v1"
    assert "lora rank 16 exceeds slot rank 8" in body["reason"]
    assert runtime.live_version == "v1"

    status = requests.get(server.url("/modelcache/status"), timeout=30).json()
    assert status["models"][NAME]["live_version"] == "v1"
    metrics = requests.get(server.url("/metrics"), timeout=30).text
    assert f'modelcache_runtime_live_version{{model="{NAME}",version="v1"}} 1.0' in metrics
    assert 'reason="rank"' in metrics


def test_the_agents_reload_client_reads_the_answers(
    server: ReloadServer, versions: dict[str, Path]
) -> None:
    ok = call_reload(server.url(), model=NAME, version="v1", path=versions["good"])
    assert (ok.ok, ok.status, ok.live_version) == (True, 200, "v1")
    refused = call_reload(server.url(), model=NAME, version="v2", path=versions["bad"])
    assert (refused.ok, refused.status, refused.live_version) == (False, 409, "v1")
    assert refused.reason is not None
    assert "exceeds slot rank" in refused.reason


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"not json", 400, "not JSON"),
        (b'{"model": "studio/garment-lora"}', 400, "expected"),
        (b'{"model": "other/x", "version": "v1", "path": "/x"}', 404, "not 'other/x'"),
    ],
)
def test_malformed_calls(server: ReloadServer, body: bytes, status: int, reason: str) -> None:
    answer = requests.post(server.url(), data=body, timeout=30)
    assert answer.status_code == status
    assert reason in answer.json()["reason"]


async def call_asgi(app: Any, method: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """What an ASGI server does for one request: scope, body in two chunks, collect the answer."""
    chunks = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:], "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/modelcache/reload", "headers": []}
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_reload_through_the_asgi_route(runtime: LoraRuntime, versions: dict[str, Path]) -> None:
    app = asgi_app(ReloadService([runtime]))

    def post(version: str, path: Path) -> tuple[int, dict[str, Any]]:
        call = {"model": NAME, "version": version, "path": str(path)}
        return asyncio.run(call_asgi(app, "POST", json.dumps(call).encode()))

    status, body = post("v1", versions["good"])
    assert (status, body["ok"], body["live_version"]) == (200, True, "v1")
    status, body = post("v2", versions["bad"])
    assert (status, body["ok"], body["live_version"]) == (409, False, "v1")
    assert "exceeds slot rank" in body["reason"]
    status, body = asyncio.run(call_asgi(app, "GET", b""))
    assert status == 200
    assert body["models"][NAME]["live_version"] == "v1"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_gets_a_one_line_4xx_never_an_exception(body: bytes) -> None:
    """The reload contract (api/reload.py) parses every body: what is not a call is a 400
    naming the problem in one line; a call for a model this pod does not serve, a 404."""
    status, answer = ReloadService([]).handle(body)
    assert status in (400, 404)
    assert answer["ok"] is False
    assert isinstance(answer["reason"], str)
    assert "\n" not in answer["reason"]
