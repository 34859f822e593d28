"""What every agent process has around its mode's loop, whichever the mode: the event log (to
a file and stdout, feeding the metrics), the metrics server, the scrubber, and the order in
which they stop. `modelcache/agent/daemon.py` starts one for each mode."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import EventLog
from modelcache.agent.metrics import AgentMetrics
from modelcache.agent.scrubber import Scrubber
from modelcache.serving import MetricsServer, start_metrics_server

SCRUBBER_JOIN_SECONDS = 30.0
"""How long a stopping agent waits for the scrubber to finish the file it is hashing."""


@dataclass(frozen=True)
class Verification:
    """The scrubber's budget: every held file re-verified once per `pass_interval` seconds, at
    `bytes_per_second` on average; corrupt ones repaired from L3 when `repair`."""

    bytes_per_second: float
    pass_interval: float
    repair: bool = True


class AgentProcess:
    """What every agent process has around its mode's loop. The event log and the metrics
    exist from construction (the mode's engine writes to them); `run` starts the rest."""

    def __init__(
        self,
        event_log: Path,
        *,
        node: str | None,
        stdout_events: bool = True,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",  # noqa: S104 - scraped by Prometheus from outside the node
        verify: Verification | None = None,
    ) -> None:
        self.metrics = AgentMetrics()
        self.events = EventLog(event_log, stdout=stdout_events, node=node)
        self.events.subscribe(self.metrics.observe)
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.verify = verify
        self.metrics_server: MetricsServer | None = None

    def run(
        self,
        loop: Callable[[], None],
        *,
        stop: threading.Event,
        engine: Callable[[], CacheEngine],
    ) -> None:
        """Start the metrics server and the scrubber, run `loop` until it returns (`stop` is
        set), then stop in order: the scrubber, the metrics server, the event log. `engine`
        gives the mode's current engine, which the scrubber follows (node.yaml may change it)."""
        if self.metrics_port is not None:
            self.metrics_server = start_metrics_server(
                self.metrics_port, self.metrics_host, self.metrics.registry
            )
        scrubber: Scrubber | None = None
        if self.verify is not None:
            scrubber = Scrubber(
                engine,
                bytes_per_second=self.verify.bytes_per_second,
                pass_interval=self.verify.pass_interval,
                repair=self.verify.repair,
                stop=stop,
            )
            scrubber.start()
        try:
            loop()
        finally:
            stop.set()
            if scrubber is not None:
                scrubber.join(timeout=SCRUBBER_JOIN_SECONDS)
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self.events.close()
