"""node.yaml's `peers`: the example in docs/fanout.md parses, and mistakes are named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelcache.agent.config import ConfigError, parse_config

DOC = Path(__file__).resolve().parents[3] / "docs" / "fanout.md"


def documented_config() -> bytes:
    text = DOC.read_text()
    found = re.search(r"## Configure it \(standalone\).*?```yaml\n(.*?)```", text, re.S)
    assert found is not None, "docs/fanout.md no longer has its node.yaml example"
    return found.group(1).encode()


def test_the_documented_fleet_config_parses() -> None:
    config = parse_config(documented_config(), "docs/fanout.md")
    assert config.peers is not None
    assert [n.name for n in config.peers.nodes] == ["gpu-01", "gpu-02", "gpu-03"]
    assert config.peers.nodes[1].url == "http://10.0.0.12:9471"


@pytest.mark.parametrize(
    ("peers", "problem"),
    [
        ("peers: {token_file: /t}\n", "set `node`"),
        ("node: a\npeers: {nodes: []}\n", "token_file"),
        (
            "node: a\npeers: {token_file: /t, nodes: [{name: b, url: 'http://x'}, {name: b, url: 'http://y'}]}\n",
            "listed twice",
        ),
        ("node: a\npeers: {token_file: /t, nodes: [{name: b, url: 'ftp://x'}]}\n", "http"),
        (
            "node: a\npeers: {token_file: /t, nodes: [{name: b, url: 'http://u:p@x'}]}\n",
            "peers.nodes.0.url",
        ),
        ("node: a\npeers: {token_file: /t, nodes: [{name: B_1, url: 'http://x'}]}\n", "node name"),
    ],
)
def test_a_wrong_peers_block_is_refused_by_name(peers: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        parse_config(peers.encode(), "node.yaml")
