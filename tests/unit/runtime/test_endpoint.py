"""The reload call over real HTTP, and the ASGI route driven by a minimal ASGI server stand-in."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modelcache.agent.reload import call_reload
from modelcache.api import ReloadAnswer
from modelcache.runtime import LoraRuntime, ReloadServer, ReloadService, RuntimeConfig, asgi_app
from modelcache.store import Store
from tests.strategies import json_values
from tests.unit.runtime.support import MODEL, TinyNet, install_version, make_adapter, write_version

NAME = str(MODEL)


@pytest.fixture
def versions(store: Store, tmp_path: Path) -> dict[str, Path]:
    good = install_version(store, "v1", make_adapter(1).files(tmp=tmp_path))
    bad = install_version(store, "v2", make_adapter(2, rank=16).files(tmp=tmp_path))
    store.flip(MODEL, "v1")
    return {"good": good, "bad": bad}


@pytest.fixture
def rooted(model: TinyNet, store: Store) -> LoraRuntime:
    """A runtime as a pod has it: the node's cache mounted at `root`."""
    return LoraRuntime(model, RuntimeConfig(model=NAME, root=store.root))


@pytest.fixture
def server(rooted: LoraRuntime) -> Iterator[ReloadServer]:
    with ReloadServer(ReloadService([rooted]), host="127.0.0.1", port=0) as running:
        yield running


def test_reload_over_http(
    server: ReloadServer, rooted: LoraRuntime, store: Store, versions: dict[str, Path]
) -> None:
    url = server.url()
    answer = requests.post(url, json={"model": NAME, "version": "v1"}, timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert body["ok"] is True
    assert body["live_version"] == "v1"
    assert set(body["timings"]) >= {"read_s", "verify_s", "stage_s", "swap_s"}
    assert rooted.live_version == "v1"

    store.flip(MODEL, "v2")  # the agent flips to a version the slots cannot hold
    answer = requests.post(url, json={"model": NAME, "version": "v2"}, timeout=30)
    assert answer.status_code == 409
    body = answer.json()
    assert body["ok"] is False
    assert body["live_version"] == "v1"
    assert "lora rank 16 exceeds slot rank 8" in body["reason"]
    assert rooted.live_version == "v1"

    status = requests.get(server.url("/modelcache/status"), timeout=30).json()
    assert status["models"][NAME]["live_version"] == "v1"
    metrics = requests.get(server.url("/metrics"), timeout=30).text
    assert f'modelcache_runtime_live_version{{model="{NAME}",version="v1"}} 1.0' in metrics
    assert 'reason="rank"' in metrics


def test_the_agents_reload_client_reads_the_answers(
    server: ReloadServer, store: Store, versions: dict[str, Path]
) -> None:
    ok = call_reload(server.url(), model=NAME, version="v1")
    assert (ok.ok, ok.status, ok.live_version) == (True, 200, "v1")
    store.flip(MODEL, "v2")
    refused = call_reload(server.url(), model=NAME, version="v2")
    assert (refused.ok, refused.status, refused.live_version) == (False, 409, "v1")
    assert refused.reason is not None
    assert "exceeds slot rank" in refused.reason
    assert refused.answered, "a refusal is a verdict, not a pod still starting"


def _point_current(store: Store, target: str) -> None:
    link = store.current_path(MODEL)
    tmp = link.with_name("current.test")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def test_a_caller_cannot_make_the_pod_load_anything_but_current(
    rooted: LoraRuntime, store: Store, versions: dict[str, Path], tmp_path: Path, model: TinyNet
) -> None:
    """Forged directories, other installed versions, paths outside the root, symlinks and
    special files: the live version never changes."""
    service = ReloadService([rooted])
    assert service.handle(json.dumps({"model": NAME, "version": "v1"}).encode())[0] == 200
    x = torch.randn(4, 16)
    with torch.no_grad():
        before = model(x)
    forged = write_version(tmp_path / "forged" / "v3", "v3", make_adapter(3).files(tmp=tmp_path))
    versions_dir = store.version_path(MODEL, "v1").parent

    def call(**fields: str) -> tuple[int, dict[str, Any]]:
        return service.handle(json.dumps({"model": NAME, **fields}).encode())

    attempts = [
        call(version="v3", path=str(forged)),  # a forged version outside the root
        call(version="v2"),  # installed, prefetched, never released: current names v1
        call(version="v2", path=str(versions["bad"])),
    ]
    _point_current(store, str(forged))  # current itself pointing outside the root
    attempts.append(call(version="v3"))
    (versions_dir / "v4").symlink_to(forged, target_is_directory=True)  # a symlinked version
    _point_current(store, "versions/v4")
    attempts.append(call(version="v4"))
    fifo_version = write_version(versions_dir / "v5", "v5", make_adapter(5).files(tmp=tmp_path))
    adapter = next(fifo_version.glob("*.safetensors"))
    adapter.unlink()
    os.mkfifo(adapter)  # a special file: reading it would hang the pod
    _point_current(store, "versions/v5")
    attempts.append(call(version="v5"))
    linked = write_version(versions_dir / "v6", "v6", make_adapter(6).files(tmp=tmp_path))
    outside = next(linked.glob("*.safetensors"))
    outside.unlink()
    outside.symlink_to(next(forged.glob("*.safetensors")))  # a file symlinked out
    _point_current(store, "versions/v6")
    attempts.append(call(version="v6"))
    _point_current(store, "../../../../etc")
    attempts.append(call(version="etc"))

    for status, answer in attempts:
        assert status == 409, answer
        assert answer["live_version"] == "v1", answer
    assert rooted.live_version == "v1"
    with torch.no_grad():
        assert torch.equal(model(x), before), "the live weights never changed"


def test_without_a_root_there_is_no_reload_endpoint(runtime: LoraRuntime) -> None:
    with pytest.raises(ValueError, match=r"RuntimeConfig\.root"):
        ReloadService([runtime])


def test_reload_calls_are_bounded(rooted: LoraRuntime, versions: dict[str, Path]) -> None:
    """The most a caller can do is ask the pod to re-read `current`, and only so often."""
    service = ReloadService([rooted], reloads_per_second=2)
    call = json.dumps({"model": NAME, "version": "v1"}).encode()
    statuses = [service.handle(call)[0] for _ in range(5)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    assert rooted.live_version == "v1"


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


def test_reload_through_the_asgi_route(
    rooted: LoraRuntime, store: Store, versions: dict[str, Path]
) -> None:
    app = asgi_app(ReloadService([rooted]))

    def post(version: str) -> tuple[int, dict[str, Any]]:
        call = {"model": NAME, "version": version}
        return asyncio.run(call_asgi(app, "POST", json.dumps(call).encode()))

    status, body = post("v1")
    assert (status, body["ok"], body["live_version"]) == (200, True, "v1")
    store.flip(MODEL, "v2")
    status, body = post("v2")
    assert (status, body["ok"], body["live_version"]) == (409, False, "v1")
    assert "exceeds slot rank" in body["reason"]
    status, body = asyncio.run(call_asgi(app, "GET", b""))
    assert status == 200
    assert body["models"][NAME]["live_version"] == "v1"


json_documents = json_values()


@settings(max_examples=300, deadline=None)
@example(body=b'{"\\n": null}')  # a key with a newline: still one line
@given(body=st.binary(max_size=200) | json_documents.map(lambda v: json.dumps(v).encode()))
def test_any_body_gets_a_one_line_4xx_never_an_exception(body: bytes) -> None:
    """The reload contract (api/reload.py) parses every body: what is not a call is a 400
    naming the problem in one line; a call for a model this pod does not serve, a 404."""
    status, answer = ReloadService([]).handle(body)
    assert status in (400, 404)
    assert answer["ok"] is False
    assert isinstance(answer["reason"], str)
    assert "\n" not in answer["reason"]


def test_every_answer_is_the_contracts_answer(
    rooted: LoraRuntime, store: Store, versions: dict[str, Path]
) -> None:
    """The pod's answers, success included, are `ReloadAnswer`s: every key they carry is a
    field of the contract the agent reads, with the keys and values the agent always got."""
    service = ReloadService([rooted])
    status, loaded = service.handle(json.dumps({"model": NAME, "version": "v1"}).encode())
    assert status == 200
    assert set(loaded) == {
        "ok",
        "model",
        "live_version",
        "previous_version",
        "path",
        "bytes",
        "unchanged",
        "timings",
    }
    assert (loaded["model"], loaded["previous_version"], loaded["unchanged"]) == (NAME, None, False)
    assert loaded["path"] == str(versions["good"].resolve())
    store.flip(MODEL, "v2")
    status, refused = service.handle(json.dumps({"model": NAME, "version": "v2"}).encode())
    assert status == 409
    assert set(refused) == {"ok", "live_version", "reason", "kind"}
    status, malformed = service.handle(b"{")
    assert status == 400
    assert set(malformed) == {"ok", "live_version", "reason"}
    assert malformed["live_version"] is None
    for answer in (loaded, refused, malformed):
        parsed = ReloadAnswer.model_validate(answer)
        assert set(answer) <= set(ReloadAnswer.model_fields)
        assert parsed.to_wire() == answer
