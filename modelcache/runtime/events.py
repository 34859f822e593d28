"""The runtime's cache events (L1: a pod's GPU memory), one dataclass per kind, as the agent's.

A pod has no event log file: each event is one line of the runtime's logger,
`"L1_LOAD: studio/lora v2 loaded to cuda:0 ..."`, its kind first so that it greps like the
agent's log. The kinds are shared with the agent in `modelcache/api/events.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from modelcache.api import EventKind, ModelEvent


@dataclass(frozen=True, kw_only=True)
class RuntimeEvent(ModelEvent):
    """An event of one model's runtime; `text` is its log line after the kind."""

    level = logging.INFO

    def text(self) -> str:
        return f"{self.model} {self.version}"

    def log(self, logger: logging.Logger) -> None:
        logger.log(self.level, "%s: %s", self.kind, self.text())


@dataclass(frozen=True, kw_only=True)
class Loaded(RuntimeEvent):
    """A version is live: its adapter copied into the slots at a request boundary."""

    kind = EventKind.L1_LOAD
    device: str
    bytes: int
    seconds: float
    swap_seconds: float

    def text(self) -> str:
        return (
            f"{self.model} {self.version} loaded to {self.device} ({self.bytes / 1e6:.1f} MB) "
            f"in {self.seconds:.3f}s, swap {self.swap_seconds:.3f}s"
        )


@dataclass(frozen=True, kw_only=True)
class Refused(RuntimeEvent):
    """A version was refused before the copy: the live version and weights stay."""

    kind = EventKind.L1_REFUSED
    level = logging.WARNING
    refusal: str  # which check refused it (SwapRefused.kind)
    reason: str
    live_version: str | None

    def text(self) -> str:
        return f"{self.model} {self.version}: {self.reason} (live stays {self.live_version})"


@dataclass(frozen=True, kw_only=True)
class Torn(RuntimeEvent):
    """The copy failed partway: the slots hold parts of two versions until a swap succeeds."""

    kind = EventKind.L1_TORN
    level = logging.ERROR
    error: str

    def text(self) -> str:
        return f"{self.model} {self.version}: {self.error}"
