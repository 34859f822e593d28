"""Acceptance: the standalone agent flips a version and calls the pod's reload endpoint; the
live version the pod reports follows the flip, and a bad version is refused, the old one kept."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import requests
import torch
import yaml

from modelcache.agent.standalone import StandaloneAgent
from modelcache.runtime import LoraRuntime, ReloadServer, ReloadService, RuntimeConfig
from modelcache.sources import open_source, publish
from tests.unit.runtime.support import build, expected_model, inputs, make_adapter, run
from tests.waiting import wait_for

NAME = "studio/lora"


def test_agent_flip_reload_and_refusal(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    source = open_source(f"file://{bucket}")
    adapters = {
        "v1": make_adapter(1),
        "v2": make_adapter(2, rank=4),
        "v3": make_adapter(3, rank=16),
    }
    for version, adapter in adapters.items():
        files = tmp_path / "publish" / version
        files.mkdir(parents=True)
        for name, data in adapter.files(tmp=tmp_path).items():
            (files / name).write_bytes(data)
        publish(source, files, version)

    root = tmp_path / "cache"
    model = build()
    runtime = LoraRuntime(model, RuntimeConfig(model=NAME, root=root))
    server = ReloadServer(ReloadService([runtime]), host="127.0.0.1", port=0).start()
    config: dict[str, Any] = {
        "root": str(root),
        "node": "gpu-01",
        "poll_seconds": 0.1,
        "resync_seconds": 1,
        "models": [
            {"name": NAME, "source": f"file://{bucket}", "version": "v1", "reload": [server.url()]}
        ],
    }
    config_path = tmp_path / "node.yaml"
    config_path.write_text(yaml.safe_dump(config))
    agent = StandaloneAgent(config_path, stdout_events=False)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()

    def reported() -> str | None:
        status = requests.get(server.url("/modelcache/status"), timeout=10).json()
        live: str | None = status["models"][NAME]["live_version"]
        return live

    try:
        wait_for(lambda: reported() == "v1", "the pod to report v1")
        assert torch.equal(run(model, inputs()), run(expected_model(adapters["v1"]), inputs()))
        current = root / "models/studio/lora/current"
        for version in ("v2", "v3"):
            config["models"][0]["version"] = version
            config_path.write_text(yaml.safe_dump(config))

            def flipped(want: str = version) -> bool:
                return current.resolve().name == want

            wait_for(flipped, f"the flip to {version}")
            if version == "v2":
                wait_for(lambda: reported() == "v2", "the pod to report v2")

        # v3's rank is above the slot's: the agent flipped, the pod refused and kept v2.
        def refused() -> bool:
            labels = {"model": NAME, "reason": "rank"}
            registry = runtime.metrics.registry
            return bool(registry.get_sample_value("modelcache_runtime_swap_failures_total", labels))

        wait_for(refused, "the pod to refuse v3")
        assert reported() == "v2"
        assert torch.equal(run(model, inputs()), run(expected_model(adapters["v2"]), inputs()))
    finally:
        agent.stop.set()
        thread.join(timeout=30)
        server.stop()
