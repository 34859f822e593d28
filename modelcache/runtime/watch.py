"""`watch_current`: follow a model's `current` symlink, for a pod with no agent calling it.

Standalone use (one GPU server, as in the case): the app points at
`.../models/<ns>/<name>/current`; whenever that link is flipped (by `modelcache use`,
`modelcache rollback` or the agent), the runtime swaps to the version it names. A
refused version is not retried until the link changes again or `retry_s` has passed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from modelcache.runtime.errors import SwapRefused
from modelcache.runtime.runtime import LoraRuntime, StrPath, SwapResult

log = logging.getLogger(__name__)


class CurrentWatcher:
    """Polls `current` every `interval_s` on a daemon thread; `check()` does one poll."""

    def __init__(
        self,
        runtime: LoraRuntime,
        current: StrPath,
        *,
        interval_s: float = 1.0,
        retry_s: float = 60.0,
    ) -> None:
        self.runtime = runtime
        self.current = Path(current)
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.last_error: SwapRefused | None = None
        self._failed: tuple[str, float] | None = None  # target, when
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> SwapResult | None:
        """Swap if `current` names another version than the live one; None if nothing to do."""
        try:
            target = os.path.realpath(self.current, strict=True)
        except OSError:
            return None  # no version flipped yet
        version = Path(target).name
        if version == self.runtime.live_version:
            return None
        failed = self._failed
        if failed and failed[0] == target and time.monotonic() - failed[1] < self.retry_s:
            return None
        try:
            result = self.runtime.swap(version, Path(target))
        except SwapRefused as refusal:
            self.last_error = refusal
            self._failed = (target, time.monotonic())
            return None
        self._failed = None
        self.last_error = None
        return result

    def start(self) -> CurrentWatcher:
        self._thread = threading.Thread(target=self._run, name="watch-current", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # a watcher that dies silently would freeze the version
                log.exception("watching %s", self.current)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def watch_current(
    runtime: LoraRuntime, current: StrPath, *, interval_s: float = 1.0, retry_s: float = 60.0
) -> CurrentWatcher:
    """Swap to the version `current` (a str or a path) names now (if any), then keep
    following it."""
    watcher = CurrentWatcher(runtime, current, interval_s=interval_s, retry_s=retry_s)
    watcher.check()
    return watcher.start()
