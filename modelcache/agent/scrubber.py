"""Continuous re-verification of held files within an I/O budget.

The case re-checked checksums nightly in one burst; this spreads the same work
over the day at a bounded average rate and repairs from L3 what it finds broken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from modelcache.agent.engine import CacheEngine, VerifyReport
from modelcache.sources import SourceError
from modelcache.store import StoreError

log = logging.getLogger(__name__)


class Scrubber:
    """A thread verifying every held file once per pass, at `bytes_per_second` on average."""

    def __init__(
        self,
        engine: CacheEngine | Callable[[], CacheEngine],
        *,
        bytes_per_second: float,
        pass_interval: float,
        repair: bool,
        stop: threading.Event,
    ) -> None:
        # A callable follows the agent's current engine (node.yaml may replace it).
        self._engine = engine if callable(engine) else (lambda: engine)
        self.bytes_per_second = bytes_per_second
        self.pass_interval = pass_interval
        self.repair = repair
        self.stop = stop
        self.passes = 0
        self.last_report: VerifyReport | None = None
        self._thread = threading.Thread(target=self._run, name="modelcache-scrubber", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.last_report = self.run_pass()
                self.passes += 1
            except (SourceError, StoreError, OSError) as error:
                log.warning("verification pass failed: %s", error)
            self.stop.wait(max(self.pass_interval - (time.monotonic() - started), 1.0))

    def run_pass(self) -> VerifyReport:
        """One pass over every version of every model, pausing to stay inside the budget."""
        report = VerifyReport()
        engine = self._engine()
        store = engine.store
        for model in store.models():
            for installed in store.versions(model):
                for entry in store.manifest(model, installed.version).files:
                    if self.stop.is_set():
                        return report
                    began = time.monotonic()
                    engine.verify_file(model, installed.version, entry, report, repair=self.repair)
                    owed = entry.size / self.bytes_per_second - (time.monotonic() - began)
                    if owed > 0:
                        self.stop.wait(owed)
        return report
