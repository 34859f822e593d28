"""Wake a ModelVersion's reconcile loop early when something it depends on changed.

Agents report through NodeCache status; a rollout waits on those reports, so the
loop sleeps on an event that a NodeCache (or Node) watch sets, instead of polling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class WakeupBoard:
    """One threading.Event per ModelVersion (namespace, name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], threading.Event] = {}

    def register(self, namespace: str, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault((namespace, name), threading.Event())

    def unregister(self, namespace: str, name: str) -> None:
        with self._lock:
            self._events.pop((namespace, name), None)

    def wake(self, namespace: str, name: str) -> None:
        with self._lock:
            event = self._events.get((namespace, name))
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        with self._lock:
            events = list(self._events.values())
        for event in events:
            event.set()


def sleep_until(
    wakeup: threading.Event, seconds: float, stopped: Callable[[], bool], tick: float = 0.1
) -> None:
    """Sleep up to `seconds`, returning early on a wakeup or a stop request."""
    waited = 0.0
    while waited < seconds and not stopped():
        if wakeup.wait(min(tick, seconds - waited)):
            wakeup.clear()
            return
        waited += tick
