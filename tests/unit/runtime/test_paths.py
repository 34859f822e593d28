"""Paths as callers hold them: the runtime's public API takes a str, a Path or any
os.PathLike wherever a path is meant, as the README's inference-pod snippet passes
`root="/var/lib/modelcache"`. A str root used to be kept as a str: every reload call then
raised inside the handler and the agent's connection was dropped without an answer."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import torch

from modelcache.runtime import (
    LoraRuntime,
    ReloadServer,
    ReloadService,
    RuntimeConfig,
    watch_current,
    write_safetensors,
)
from modelcache.store import Store
from tests.unit.runtime.support import MODEL, TinyNet, install_version, make_adapter

NAME = str(MODEL)


class OtherPath(os.PathLike[str]):
    """An os.PathLike that is not a pathlib.Path (as some path libraries hand out)."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)

    def __fspath__(self) -> str:
        return self._path


AS_GIVEN: dict[str, Callable[[Path], str | os.PathLike[str]]] = {
    "str": str,
    "Path": Path,
    "PathLike": OtherPath,
}


@pytest.fixture(params=sorted(AS_GIVEN))
def given(request: pytest.FixtureRequest) -> Callable[[Path], str | os.PathLike[str]]:
    return AS_GIVEN[request.param]


@pytest.fixture
def two_versions(store: Store, tmp_path: Path) -> Store:
    install_version(store, "v1", make_adapter(1).files(tmp=tmp_path))
    install_version(store, "v2", make_adapter(2, rank=4).files(tmp=tmp_path))
    store.flip(MODEL, "v1")
    return store


def test_a_reload_call_over_http_answers_whatever_form_root_has(
    model: TinyNet, two_versions: Store, given: Callable[[Path], str | os.PathLike[str]]
) -> None:
    store = two_versions
    runtime = LoraRuntime(model, RuntimeConfig(model=NAME, root=given(store.root)))
    assert runtime.config.root == store.root
    with ReloadServer(ReloadService([runtime]), host="127.0.0.1", port=0) as server:
        first = requests.post(server.url(), json={"model": NAME, "version": "v1"}, timeout=30)
        assert first.status_code == 200, first.text
        assert first.json()["live_version"] == "v1"
        store.flip(MODEL, "v2")
        second = requests.post(server.url(), json={"model": NAME, "version": "v2"}, timeout=30)
        assert second.status_code == 200, second.text
        assert second.json()["live_version"] == "v2"
    assert runtime.live_version == "v2"


def test_the_root_stays_a_path_through_replace(model: TinyNet, tmp_path: Path) -> None:
    config = RuntimeConfig(model=NAME, root=str(tmp_path))
    assert isinstance(config.root, Path)
    changed = dataclasses.replace(config, drain_timeout_s=5.0)
    assert changed.root == tmp_path
    assert changed.drain_timeout_s == 5.0
    assert changed == dataclasses.replace(changed)
    assert RuntimeConfig(model=NAME).root is None


def test_swap_watch_and_write_take_any_path_form(
    model: TinyNet,
    store: Store,
    tmp_path: Path,
    given: Callable[[Path], str | os.PathLike[str]],
) -> None:
    adapter = make_adapter(3)
    weights = tmp_path / "written.safetensors"
    write_safetensors(given(weights), adapter.tensors)
    assert weights.stat().st_size > 0
    v1 = install_version(store, "v1", adapter.files(tmp=tmp_path))
    runtime = LoraRuntime(model, RuntimeConfig(model=NAME))
    assert runtime.swap("v1", given(v1)).version == "v1"

    install_version(store, "v2", make_adapter(4).files(tmp=tmp_path))
    store.flip(MODEL, "v2")
    watcher = watch_current(runtime, given(store.current_path(MODEL)), interval_s=60)
    try:
        assert runtime.live_version == "v2"
        assert isinstance(watcher.current, Path)
    finally:
        watcher.stop()
    with runtime.request(), torch.no_grad():
        model(torch.zeros(1, 2, 16))
