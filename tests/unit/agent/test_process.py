"""One agent process for both modes: around the mode's loop it serves the metrics, runs the
scrubber on the mode's current engine, and stops everything in order when the loop ends,
however it ends (a crash of the loop included)."""

from __future__ import annotations

import socket
import threading
import urllib.request
from pathlib import Path

import pytest

from modelcache.agent import AgentProcess, CacheEngine, Flipped, Verification
from modelcache.store import Store


def _serves(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


def test_the_process_runs_around_the_loop_and_stops_in_order(tmp_path: Path) -> None:
    process = AgentProcess(
        tmp_path / "events.jsonl",
        node="gpu-1",
        stdout_events=False,
        metrics_port=0,
        metrics_host="127.0.0.1",
        verify=Verification(bytes_per_second=1e9, pass_interval=3600),
    )
    engine = CacheEngine(Store(tmp_path / "cache"), process.events)
    stop = threading.Event()
    seen: dict[str, str] = {}

    def loop() -> None:
        assert process.metrics_server is not None
        port = process.metrics_server.server_port
        process.events.emit(Flipped(model="studio/lora", version="v2", previous="v1"))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        seen["port"] = str(port)
        seen["metrics"] = metrics.decode()
        seen["threads"] = " ".join(t.name for t in threading.enumerate())
        raise RuntimeError("the mode's loop failed")

    with pytest.raises(RuntimeError, match="loop failed"):
        process.run(loop, stop=stop, engine=lambda: engine)
    assert 'modelcache_flips_total{model="studio/lora"} 1.0' in seen["metrics"]
    assert "modelcache-scrubber" in seen["threads"]
    assert stop.is_set(), "the scrubber and the mode see the stop"
    assert "modelcache-scrubber" not in [t.name for t in threading.enumerate()]
    assert not _serves(int(seen["port"])), "the metrics server is closed"
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert '"event":"L2_FLIP"' in lines[0]
    assert '"node":"gpu-1"' in lines[0]
    assert process.events._file is None, "the event log is closed"


def test_without_a_port_or_a_budget_there_is_no_server_and_no_scrubber(tmp_path: Path) -> None:
    process = AgentProcess(tmp_path / "events.jsonl", node=None, stdout_events=False)
    engine = CacheEngine(Store(tmp_path / "cache"), process.events)
    names: list[str] = []
    process.run(
        lambda: names.extend(t.name for t in threading.enumerate()),
        stop=threading.Event(),
        engine=lambda: engine,
    )
    assert process.metrics_server is None
    assert "modelcache-scrubber" not in names
