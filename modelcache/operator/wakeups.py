"""Wake a ModelVersion's reconcile loop early when something it depends on changed.

Agents report through NodeCache status; a rollout waits on those reports, so the
loop sleeps on an asyncio event that the NodeCache (or Node) watch handlers set,
instead of polling. Everything here runs on kopf's event loop: no thread waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class WakeupBoard:
    """Per ModelVersion (namespace, name): an event to wake its loop, and a lock that
    keeps a reconcile step and the deletion cleanup from overlapping."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def register(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def unregister(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)

    def wake(self, namespace: str, name: str) -> None:
        event = self._events.get((namespace, name))
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        for event in list(self._events.values()):
            event.set()


class NodeSelectionMemory:
    """What of each Node a reconcile reads: whether it exists, its labels, its readiness,
    its taints.

    Real kubelets update their Node's status every few seconds; only an added or deleted
    Node, one whose labels or taints changed, or one that turned Ready or NotReady can
    change a rollout, so only those should wake every reconcile loop."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[dict[str, str], bool, Hashable]] = {}

    def changed(
        self,
        event: str,
        name: str,
        labels: dict[str, str],
        *,
        ready: bool = True,
        taints: Hashable = (),
    ) -> bool:
        """Record a watch event; True when it can change a rollout."""
        if event == "DELETED":
            self._seen.pop(name, None)
            return True
        if self._seen.get(name) == (labels, ready, taints):
            return False
        self._seen[name] = (dict(labels), ready, taints)
        return True


async def sleep_until(wakeup: asyncio.Event, seconds: float) -> None:
    """Sleep up to `seconds`, returning early on a wakeup (which it consumes)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), timeout=seconds)
    wakeup.clear()


async def finish_in_thread(call: Callable[[], T]) -> T:
    """Run `call` in a thread; if we are cancelled meanwhile, still wait for it to end.

    A thread cannot be cancelled: without this, a reconcile cancelled with its
    daemon would keep writing after the caller (and its lock) had moved on.
    """
    future = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise
