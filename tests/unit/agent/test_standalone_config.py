"""The standalone agent follows its config file by content: an edit made in place is read
whole, however the writes and the clock's ticks fall."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelcache.agent.events import read_events
from modelcache.agent.standalone import StandaloneAgent
from tests.waiting import wait_for


def config_text(root: Path, resync: float) -> str:
    return yaml.safe_dump(
        {
            "root": str(root),
            "metrics_port": None,
            "poll_seconds": 0.02,
            "resync_seconds": resync,
            "verify": {"enabled": False},
            "models": [],
        }
    )


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[StandaloneAgent]:
    path = tmp_path / "node.yaml"
    path.write_text(config_text(tmp_path / "cache", resync=60))
    running = StandaloneAgent(path, stdout_events=False)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    yield running
    running.stop.set()
    thread.join(timeout=10)


def config_errors(agent: StandaloneAgent) -> list[str]:
    events = read_events(agent.config.event_log_path)
    return [e["error"] for e in events if e.get("operation") == "config"]


def test_a_config_read_half_written_is_refused_and_its_whole_write_still_taken(
    agent: StandaloneAgent,
) -> None:
    path = agent.config_path
    path.write_text("")  # an editor's truncate, seen by the agent before the write lands
    truncated = path.stat().st_mtime_ns
    wait_for(lambda: any("is empty" in e for e in config_errors(agent)), "the empty read refused")
    assert agent.config.resync_seconds == 60, "a half-written file is never the config"

    # The whole write lands within the same mtime tick as the truncate.
    path.write_text(config_text(agent.config.root, resync=30))
    os.utime(path, ns=(truncated, truncated))
    wait_for(lambda: agent.config.resync_seconds == 30, "the rewritten config taken")


def test_a_fifo_in_place_of_the_config_is_one_error_and_the_agent_keeps_stepping(
    tmp_path: Path,
) -> None:
    """Config management that puts a FIFO (or a directory) where node.yaml was: the agent
    reports it once, keeps reconciling on the last good config, and takes the next file."""
    path = tmp_path / "node.yaml"
    path.write_text(config_text(tmp_path / "cache", resync=0.05))
    agent = StandaloneAgent(path, stdout_events=False)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: agent.reconciles >= 1, "the first reconcile")
        fifo = tmp_path / "node.fifo"
        os.mkfifo(fifo)
        fifo.rename(path)  # in one step: no moment without a file
        wait_for(lambda: config_errors(agent), "the FIFO reported", timeout=20)
        stepped = agent.reconciles
        wait_for(lambda: agent.reconciles >= stepped + 5, "reconciles past the FIFO", timeout=20)
        assert agent.config.resync_seconds == 0.05, "the last good config is kept"
        (error,) = config_errors(agent)  # once, not once per poll
        assert str(path) in error
        assert "FIFO" in error

        path.unlink()
        path.mkdir()
        wait_for(
            lambda: any("a directory" in e for e in config_errors(agent)),
            "the directory reported",
            timeout=20,
        )
        path.rmdir()
        path.write_text(config_text(tmp_path / "cache", resync=30))
        wait_for(lambda: agent.config.resync_seconds == 30, "the regular file taken again")
    finally:
        agent.stop.set()
        if path.is_fifo():  # the old code blocks opening it: a writer lets it go
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=10)
    assert not thread.is_alive()
