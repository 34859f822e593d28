"""The bandwidth cap of a pull: one token bucket shared by a file's parts (or several files')."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class RateLimiter:
    """A token bucket shared by threads (and, if the caller passes one, by several files).

    Takers may run into debt: each waits until the bucket would have refilled, so
    grants come in arrival order and never exceed `burst + rate * elapsed`.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else self.rate / 4
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()

    def reserve(self, amount: int) -> float:
        """Take `amount` tokens now; returns the seconds to wait before using them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            return max(0.0, -self._tokens / self.rate)

    def acquire(self, amount: int) -> None:
        """Block until `amount` bytes may be used."""
        delay = self.reserve(amount)
        if delay > 0:
            self._sleep(delay)
