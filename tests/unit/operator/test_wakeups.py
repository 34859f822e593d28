"""A cancelled reconcile step still finishes before anyone else takes its lock."""

from __future__ import annotations

import asyncio
import threading

import pytest

from modelcache.operator.tolerations import Taint
from modelcache.operator.wakeups import (
    NodeSelectionMemory,
    WakeupBoard,
    finish_in_thread,
    sleep_until,
)


def test_cancelling_waits_for_the_thread_to_finish() -> None:
    release = threading.Event()
    finished: list[str] = []

    def slow_write() -> str:
        release.wait(10)
        finished.append("written")
        return "done"

    async def scenario() -> None:
        board = WakeupBoard()
        lock = board.lock("ns", "mv")

        async def step() -> None:
            async with lock:
                await finish_in_thread(slow_write)

        task = asyncio.create_task(step())
        await asyncio.sleep(0.05)
        task.cancel()
        asyncio.get_running_loop().call_later(0.1, release.set)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == ["written"], "the lock was held until the write ended"
        async with lock:  # the cleanup can only start now
            pass

    asyncio.run(scenario())


def test_a_wakeup_ends_the_sleep_early_and_is_consumed() -> None:
    async def scenario() -> None:
        board = WakeupBoard()
        event = board.register("ns", "mv")
        board.wake("ns", "mv")
        await asyncio.wait_for(sleep_until(event, 30), timeout=5)
        assert not event.is_set()

    asyncio.run(scenario())


def test_node_status_updates_do_not_wake_reconciles() -> None:
    memory = NodeSelectionMemory()
    assert memory.changed("ADDED", "node1", {"gpu": "a100"})
    # A kubelet's heartbeat or status update: same labels, nothing to reselect.
    assert not memory.changed("MODIFIED", "node1", {"gpu": "a100"})
    assert not memory.changed("MODIFIED", "node1", {"gpu": "a100"})
    assert memory.changed("MODIFIED", "node1", {"gpu": "h100"})
    assert memory.changed("MODIFIED", "node2", {})  # first seen through a modification
    assert memory.changed("DELETED", "node1", {"gpu": "h100"})
    assert memory.changed("ADDED", "node1", {"gpu": "h100"})  # back: selected again


def test_a_taint_added_or_removed_wakes_reconciles() -> None:
    """A tainted Node may leave the agent's reach (or come back into it)."""
    memory = NodeSelectionMemory()
    control_plane = (Taint("node-role.kubernetes.io/control-plane", "NoSchedule"),)
    assert memory.changed("ADDED", "node1", {}, taints=())
    assert memory.changed("MODIFIED", "node1", {}, taints=control_plane)
    assert not memory.changed("MODIFIED", "node1", {}, taints=control_plane)
    assert memory.changed("MODIFIED", "node1", {}, taints=())
