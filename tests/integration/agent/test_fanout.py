"""Acceptance (issue 16): standalone agent processes of one site fetch a new version from L3
once per piece and the rest from each other; a node joining takes nothing from L3; a peer
serving bad bytes is caught at the piece and avoided; a peer killed mid-pull is replaced.

L3 bytes are read from the link's own counter: every agent reaches SeaweedFS through one
delay line (no delay) that counts the bytes it carries, as the case's shared WAN line would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache.agent.events import read_events
from modelcache.api import Manifest
from modelcache.fleet import new_token
from modelcache.sources import Credentials, open_source, publish
from modelcache.testing import ObjectStore
from modelcache.testing.delayproxy import DelayProxy
from modelcache.testing.ports import free_port
from tests.integration.cli.support import make_model
from tests.waiting import wait_for

MIB = 1024 * 1024
BUCKET = "fanout-models"
MODEL = "studio/sdxl"
# 24 MiB and 9 MiB files are cut in 4 MiB pieces (6 + 3); the small one is its own piece.
FILES = {"unet/weights.safetensors": 24 * MIB, "lora/20.safetensors": 9 * MIB, "config.json": 900}
MODEL_BYTES = sum(FILES.values())
RATE = 6 * MIB  # each agent's cap: the pulls overlap long enough to watch them
MANIFEST_ALLOWANCE = 256 * 1024  # manifests, HEADs, and the index: far below one piece


@dataclass
class Site:
    """Agent processes we start (and stop by PID), all reaching L3 through one counted line."""

    tmp: Path
    line: DelayProxy
    url: str
    token_file: Path
    ports: dict[str, int] = field(default_factory=dict)
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def root(self, node: str) -> Path:
        return self.tmp / node / "cache"

    def l3_bytes(self) -> int:
        return self.line.tally().down

    def config(self, node: str, version: str, nodes: list[str]) -> Path:
        self.ports.setdefault(node, free_port())
        config: dict[str, Any] = {
            "root": str(self.root(node)),
            "node": node,
            "metrics_port": None,
            "poll_seconds": 0.2,
            "resync_seconds": 1,
            "verify": {"enabled": False},
            "pull": {"max_bytes_per_second": RATE},
            "peers": {
                "listen_host": "127.0.0.1",
                "listen_port": self.ports[node],
                "token_file": str(self.token_file),
                "absent_grace_seconds": 10,
                "stall_timeout_seconds": 10,
                "nodes": [
                    {"name": n, "url": f"http://127.0.0.1:{self.ports.setdefault(n, free_port())}"}
                    for n in nodes
                ],
            },
            "models": [{"name": MODEL, "source": self.url, "version": version}],
        }
        path = self.tmp / node / "node.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, node: str, version: str, nodes: list[str]) -> None:
        config = self.config(node, version, nodes)
        env = {**os.environ, "OSS_ENDPOINT": self.line.endpoint}
        with (self.tmp / node / "agent.out").open("ab") as out:
            self.agents[node] = subprocess.Popen(
                [sys.executable, "-m", "modelcache", "agent", "--config", str(config)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def live(self, node: str) -> str | None:
        link = self.root(node) / "models" / MODEL / "current"
        return link.resolve().name if link.is_symlink() else None

    def events(self, node: str) -> list[dict[str, Any]]:
        return read_events(self.root(node) / "events.jsonl")

    def fetched(self, node: str) -> list[dict[str, Any]]:
        return [e for e in self.events(node) if e["event"] == "L3_FETCH"]

    def kill(self, node: str) -> None:
        self.agents.pop(node).kill()

    def stop(self) -> None:
        for node, agent in list(self.agents.items()):
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
            del self.agents[node]

    def output(self, node: str) -> str:
        return (self.tmp / node / "agent.out").read_text(errors="replace")[-3000:]


@pytest.fixture
def site(object_store: ObjectStore, tmp_path: Path) -> Iterator[Site]:
    object_store.create_bucket(BUCKET)
    prefix = f"oss://{BUCKET}/{tmp_path.name}"
    line = DelayProxy(
        (object_store.host, object_store.port),
        rtt_ms=0,
        log_path=tmp_path / "line.log",
        stats_path=tmp_path / "line.json",
    )
    token_file = tmp_path / "peer-token"
    token_file.write_text(new_token() + "\n")
    token_file.chmod(0o600)
    with line:
        site = Site(tmp_path, line, prefix, token_file)
        try:
            yield site
        finally:
            site.stop()


def publish_version(site: Site, object_store: ObjectStore, version: str, seed: int) -> Manifest:
    directory = make_model(site.tmp / "src" / version, seed=seed, sizes=FILES)
    client = open_source(site.url, Credentials(endpoint=object_store.endpoint))
    return publish(client, directory, version)


def test_a_new_version_crosses_the_line_once_and_a_joining_node_takes_nothing_from_l3(
    site: Site, object_store: ObjectStore
) -> None:
    manifest = publish_version(site, object_store, "v1", seed=1)
    assert all(f.pieces is not None for f in manifest.files if f.size > 4 * MIB)
    nodes = ["gpu-a", "gpu-b", "gpu-c"]
    before = site.l3_bytes()
    for node in nodes:
        site.start(node, "v1", nodes)
    for node in nodes:
        wait_for(lambda n=node: site.live(n) == "v1", f"{node} to hold v1", timeout=120)
    carried = site.l3_bytes() - before
    assert MODEL_BYTES <= carried <= MODEL_BYTES + MANIFEST_ALLOWANCE, (
        f"the line carried {carried:,} bytes for a {MODEL_BYTES:,}-byte model on 3 nodes"
    )
    from_peers = sum(e["bytes_from_peers"] for n in nodes for e in site.fetched(n))
    assert from_peers >= 2 * (MODEL_BYTES - 900) - MANIFEST_ALLOWANCE
    for node in nodes:
        for entry in manifest.files:
            held = site.root(node) / "models" / MODEL / "current" / entry.path
            assert held.stat().st_size == entry.size

    # A node joins the site: every byte from its neighbours, none from L3.
    before_join = site.l3_bytes()
    site.start("gpu-d", "v1", [*nodes, "gpu-d"])
    wait_for(lambda: site.live("gpu-d") == "v1", "gpu-d to hold v1", timeout=120)
    joined = site.fetched("gpu-d")
    assert sum(e["pieces_from_l3"] for e in joined) == 0, joined
    # Every byte: the small file too, as a whole blob its neighbours hold verified.
    assert sum(e["bytes_from_peers"] for e in joined) == MODEL_BYTES
    assert site.l3_bytes() - before_join <= MANIFEST_ALLOWANCE, "the joining node read from L3"
    verified = [e for e in site.events("gpu-d") if e["event"] == "L2_VERIFY_FAILED"]
    assert verified == []


def test_a_peer_serving_bad_bytes_is_caught_at_the_piece_and_avoided(
    site: Site, object_store: ObjectStore
) -> None:
    manifest = publish_version(site, object_store, "v1", seed=2)
    site.start("gpu-a", "v1", ["gpu-a"])
    wait_for(lambda: site.live("gpu-a") == "v1", "gpu-a to hold v1", timeout=120)
    site.stop()
    # gpu-a's disk rots: one piece of its big blob now holds other bytes.
    big = manifest.file("unet/weights.safetensors")
    assert big.pieces is not None
    blob = site.root("gpu-a") / "blobs" / "sha256" / big.sha256[:2] / big.sha256
    with blob.open("r+b") as handle:  # root may write the store's 0444 files
        handle.seek(big.pieces.size * 2 + 100)
        handle.write(b"\xff" * 64)
    site.start("gpu-a", "v1", ["gpu-a", "gpu-b"])
    before = site.l3_bytes()
    site.start("gpu-b", "v1", ["gpu-a", "gpu-b"])
    wait_for(lambda: site.live("gpu-b") == "v1", "gpu-b to hold v1", timeout=120)

    bad = [e for e in site.events("gpu-b") if e["event"] == "PEER_BAD_PIECE"]
    assert [(e["peer"], e["file"], e["piece"]) for e in bad] == [
        ("gpu-a", "unet/weights.safetensors", 2)
    ]
    held = site.root("gpu-b") / "models" / MODEL / "current" / "unet/weights.safetensors"
    source = site.tmp / "src" / "v1" / "unet/weights.safetensors"
    assert held.read_bytes() == source.read_bytes()
    # Only what gpu-a could not be trusted with came from L3: from piece 2 on, gpu-b
    # avoided gpu-a for that file, so its later pieces came from L3 too (at most 4 of 6).
    carried = site.l3_bytes() - before
    assert big.pieces.size <= carried <= 4 * big.pieces.size + MANIFEST_ALLOWANCE
    scraped = [e for e in site.fetched("gpu-b") if e["file"] == "unet/weights.safetensors"]
    assert scraped[0]["pieces_from_l3"] >= 1


def test_a_peer_killed_mid_pull_is_replaced_and_the_pull_completes(
    site: Site, object_store: ObjectStore
) -> None:
    publish_version(site, object_store, "v1", seed=3)
    nodes = ["gpu-a", "gpu-b", "gpu-c"]
    for node in nodes:
        site.start(node, "v1", nodes)
    # Once the site is a few pieces in, one node dies without a word.
    wait_for(lambda: site.l3_bytes() >= 3 * 4 * MIB, "the site to fetch a few pieces from L3")
    site.kill("gpu-a")
    for node in ["gpu-b", "gpu-c"]:
        wait_for(lambda n=node: site.live(n) == "v1", f"{node} to hold v1", timeout=180)
    for node in ["gpu-b", "gpu-c"]:
        held = site.root(node) / "models" / MODEL / "current" / "unet/weights.safetensors"
        source = site.tmp / "src" / "v1" / "unet/weights.safetensors"
        assert held.read_bytes() == source.read_bytes(), site.output(node)
