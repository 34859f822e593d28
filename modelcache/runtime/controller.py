"""`SwapController`: the request boundary, a writer-preferring readers-writer gate.

Requests enter and leave; each is told the live version when it enters and that version
cannot change until it leaves, so one request (or one whole diffusion run, if it holds
the gate for all its steps) sees exactly one version. A swap raises a barrier (new
requests wait, so a steady stream of requests cannot starve it), waits until the
requests in flight have left, runs the copy and the switch with nobody inside, then
lowers the barrier. If the requests in flight do not drain within the timeout the swap
is refused and the barrier lowered, so a stuck request costs a retried reload, not an
outage.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from modelcache.runtime.errors import SwapRefused, TornWeightsError


class SwapController:
    """Holds the live version; `request()` for readers, `exclusive()` for the one writer."""

    def __init__(self, *, drain_timeout_s: float = 120.0, live_version: str | None = None) -> None:
        self.drain_timeout_s = drain_timeout_s
        self._cond = threading.Condition()
        self._in_flight = 0
        self._barrier = False
        self._live = live_version
        self._torn: str | None = None
        self._mine = threading.local()  # requests this thread is inside (async ones excluded)

    @property
    def live_version(self) -> str | None:
        with self._cond:
            return self._live

    @property
    def torn(self) -> str | None:
        """Why the live weights are a mix of two versions (a copy failed), else None."""
        with self._cond:
            return self._torn

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def enter(self) -> str | None:
        """Wait out any swap, then count this request in; returns the version it will see.

        Raises TornWeightsError while the live weights are a mix of two versions."""
        with self._cond:
            while self._barrier:
                self._cond.wait()
            if self._torn is not None:
                raise TornWeightsError(self._torn)
            self._in_flight += 1
            return self._live

    def leave(self) -> None:
        with self._cond:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._cond.notify_all()

    @contextmanager
    def request(self) -> Iterator[str | None]:
        """`with controller.request() as version:` the weights stay at `version` inside."""
        version = self.enter()
        self._mine.depth = getattr(self._mine, "depth", 0) + 1
        try:
            yield version
        finally:
            self._mine.depth -= 1
            self.leave()

    @asynccontextmanager
    async def request_async(self) -> AsyncIterator[str | None]:
        """The same for asyncio: waits in a worker thread, so the event loop keeps running
        the requests in flight (waiting on the loop itself would deadlock the drain)."""
        version = await asyncio.to_thread(self.enter)
        try:
            yield version
        finally:
            self.leave()

    def exclusive(self, version: str, apply: Callable[[], None]) -> float:
        """Block new requests, drain, run `apply` (the copy), make `version` live.

        Returns the seconds spent waiting for the drain. Callers serialise swaps. If `apply`
        fails, the weights are torn: TornWeightsError, for this call and every request after."""
        if getattr(self._mine, "depth", 0):
            raise SwapRefused(
                "busy",
                "a swap was asked for from inside a request on the same thread: it would wait "
                "for its own request to finish; swap from outside request()",
            )
        started = time.monotonic()
        with self._cond:
            self._barrier = True
            try:
                drained = self._cond.wait_for(
                    lambda: self._in_flight == 0, timeout=self.drain_timeout_s
                )
                if not drained:
                    raise SwapRefused(
                        "busy",
                        f"{self._in_flight} requests still in flight after "
                        f"{self.drain_timeout_s:g}s; the swap was not applied",
                    )
                waited = time.monotonic() - started
                try:
                    apply()  # under the lock: nobody is inside, and nobody can enter
                except Exception as error:
                    self._torn = (
                        f"copying {version} into the live weights failed partway ({error!r}); "
                        f"they mix {self._live or 'the previous weights'} and {version} "
                        "until a swap succeeds"
                    )
                    self._live = None
                    raise TornWeightsError(self._torn) from error
                self._torn = None
                self._live = version
                return waited
            finally:
                self._barrier = False
                self._cond.notify_all()
