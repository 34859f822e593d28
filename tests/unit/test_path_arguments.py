"""The public entry points that take a path take it as a str, a Path or any os.PathLike,
as a reader's script holds it (`Store("/var/lib/modelcache")`). The runtime's are in
tests/unit/runtime/test_paths.py; these are the store's, the sources' and the agent's."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcache.agent.config import load_config
from modelcache.agent.events import ConfigLoaded, EventLog, read_events
from modelcache.agent.standalone import StandaloneAgent
from modelcache.fs import hash_file
from modelcache.sources import open_source, publish
from modelcache.store import Store


class OtherPath(os.PathLike[str]):
    """An os.PathLike that is not a pathlib.Path."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)

    def __fspath__(self) -> str:
        return self._path


Given = Callable[[Path], str | os.PathLike[str]]
FORMS: dict[str, Given] = {"str": str, "Path": Path, "PathLike": OtherPath}


@pytest.fixture(params=sorted(FORMS))
def given(request: pytest.FixtureRequest) -> Given:
    return FORMS[request.param]


def test_store_and_publish(tmp_path: Path, given: Given) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w" * 100)
    client = open_source((tmp_path / "bucket").as_uri() + "/lora")
    manifest = publish(client, given(model), "v1")
    assert [f.path for f in manifest.files] == ["weights.bin"]
    assert hash_file(given(model / "weights.bin")).size == 100
    store = Store(given(tmp_path / "cache"))
    assert store.root == (tmp_path / "cache").absolute()


def test_agent_config_events_and_standalone_agent(tmp_path: Path, given: Given) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"root: {tmp_path / 'cache'}\nmetrics_port: null\nmodels: []\n")
    assert load_config(given(config)).root == tmp_path / "cache"

    log = EventLog(given(tmp_path / "logs" / "events.jsonl"))
    log.emit(ConfigLoaded(config=str(config), models=0))
    log.close()
    events = read_events(given(tmp_path / "logs" / "events.jsonl"))
    assert [e["event"] for e in events] == ["AGENT_CONFIG"]

    agent = StandaloneAgent(given(config), stdout_events=False)
    try:
        assert agent.config_path == config
        assert agent.config.models == []
    finally:
        agent.events.close()
