"""Acceptance: the standalone agent pulls, flips, calls reload URLs, repairs, exports metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache.agent.events import read_events
from modelcache.sources import open_source, publish
from modelcache.testing import ObjectStore
from modelcache.testing.ports import free_port
from tests.integration.cli.support import make_model
from tests.waiting import wait_for

BUCKET = "agent-models"
FILES = {"lora/20.safetensors": 512 * 1024, "vae/config.json": 900}


class ReloadRecorder(ThreadingHTTPServer):
    """An inference pod's reload endpoint: records each call, answers ok with the version."""

    calls: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: ReloadRecorder

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append(body)
        answer = json.dumps({"ok": True, "live_version": body["version"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def reload_endpoint() -> Iterator[ReloadRecorder]:
    server = ReloadRecorder(("127.0.0.1", 0), _Handler)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_agent_follows_its_config_reloads_pods_and_repairs(
    object_store: ObjectStore, tmp_path: Path, reload_endpoint: ReloadRecorder
) -> None:
    object_store.create_bucket(BUCKET)
    url = f"oss://{BUCKET}/studio-lora"
    env = {**os.environ, "OSS_ENDPOINT": object_store.endpoint}
    models = {v: make_model(tmp_path / v, seed=i, sizes=FILES) for i, v in enumerate(["v1", "v2"])}
    for version, directory in models.items():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "modelcache",
                "publish",
                str(directory),
                url,
                "--version",
                version,
            ],
            env=env,
            check=True,
            capture_output=True,
        )

    root = tmp_path / "cache"
    metrics_port = free_port()
    reload_url = f"http://127.0.0.1:{reload_endpoint.server_port}/reload"
    config: dict[str, Any] = {
        "root": str(root),
        "node": "gpu-01",
        "metrics_host": "127.0.0.1",
        "metrics_port": metrics_port,
        "poll_seconds": 0.2,
        "resync_seconds": 1,
        "verify": {"max_bytes_per_second": 50 * 1024**2, "pass_interval_seconds": 1},
        "models": [{"name": "studio/lora", "source": url, "version": "v1", "reload": [reload_url]}],
    }
    config_path = tmp_path / "node.yaml"
    config_path.write_text(yaml.safe_dump(config))
    live = root / "models/studio/lora/current"

    with (tmp_path / "agent.out").open("w") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "modelcache", "agent", "--config", str(config_path)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: any(c["version"] == "v1" for c in reload_endpoint.calls), "reload v1")
        assert live.resolve().name == "v1"
        # A nudge: the pod reads `current` itself, the call names no path.
        assert reload_endpoint.calls[0] == {"model": "studio/lora", "version": "v1"}
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        assert 'modelcache_live_version{model="studio/lora",version="v1"} 1.0' in metrics

        config["models"][0]["version"] = "v2"
        config_path.write_text(yaml.safe_dump(config))
        wait_for(lambda: any(c["version"] == "v2" for c in reload_endpoint.calls), "reload v2")
        assert live.resolve().name == "v2"

        damaged = live / "lora/20.safetensors"
        original = (models["v2"] / "lora/20.safetensors").read_bytes()
        with damaged.open("r+b") as handle:  # root may write a 0444 file: a bit flip on disk
            handle.seek(4096)
            handle.write(b"\x00" * 16)
        wait_for(
            lambda: any(e["event"] == "L2_REPAIR" for e in read_events(root / "events.jsonl")),
            "the scrubber to repair the damaged file",
        )
        assert damaged.read_bytes() == original
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=60)
    assert code == 0, (tmp_path / "agent.out").read_text()[-3000:]

    events = read_events(root / "events.jsonl")
    kinds = [e["event"] for e in events]
    for kind in ("L3_PULL_START", "L3_PULL_END", "L2_FLIP", "L1_RELOAD", "L2_VERIFY_FAILED"):
        assert kind in kinds
    assert all(e["node"] == "gpu-01" for e in events)
    printed = [
        json.loads(line)
        for line in (tmp_path / "agent.out").read_text().splitlines()
        if line.startswith("{")
    ]
    assert [p["event"] for p in printed] == kinds, "stdout carries the same event stream"


def test_once_fails_when_a_reload_url_does_not_take_the_version(tmp_path: Path) -> None:
    """`agent --once` (cron, an init container) exits 1 and says why when a pod did not
    acknowledge the live version; 0 once it does."""
    model = make_model(tmp_path / "model", seed=3, sizes={"lora/w.safetensors": 4096})
    l3 = tmp_path / "l3"
    publish(open_source(f"file://{l3}"), model, "v1")
    closed = f"http://127.0.0.1:{free_port()}/reload"  # nothing listens there
    config = {
        "root": str(tmp_path / "cache"),
        "metrics_port": None,
        "verify": {"enabled": False},
        "models": [
            {"name": "studio/lora", "source": f"file://{l3}", "version": "v1", "reload": [closed]}
        ],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    once = [sys.executable, "-m", "modelcache", "agent", "--config", str(path), "--once"]
    failed = subprocess.run(once, capture_output=True, text=True, timeout=120, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "reload" in failed.stderr
    assert (tmp_path / "cache/models/studio/lora/current").resolve().name == "v1"

    config["models"][0]["reload"] = []
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(once, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
