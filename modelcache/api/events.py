"""The cache events' vocabulary: every kind of event, and the base an event is written from.

An event is a frozen dataclass whose `kind` is its name in the log and whose fields are its
JSON keys: `{"ts": ..., "event": "L2_FLIP", "model": ..., ...}`. The names follow the case's
operators' vocabulary: L3 is the object store, L2 the node's disk, L1 a pod's GPU memory.
The agent's events are in `modelcache/agent/events.py` (with the log that writes them), the
runtime's in `modelcache/runtime/events.py`, the reload call's in `modelcache/api/reload.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class EventKind(StrEnum):
    """Every kind of cache event, each named as the log writes it."""

    L3_PULL_START = "L3_PULL_START"
    L3_PULL_END = "L3_PULL_END"
    L3_FETCH = "L3_FETCH"
    L3_RESUME_DISCARDED = "L3_RESUME_DISCARDED"
    PEER_BAD_PIECE = "PEER_BAD_PIECE"
    PEER_UNAVAILABLE = "PEER_UNAVAILABLE"
    L2_HIT = "L2_HIT"
    L2_VERIFY_FAILED = "L2_VERIFY_FAILED"
    L2_REPAIR = "L2_REPAIR"
    L2_INSTALL = "L2_INSTALL"
    L2_FLIP = "L2_FLIP"
    L2_WARMUP = "L2_WARMUP"
    L2_EVICT = "L2_EVICT"
    L2_REMOVE = "L2_REMOVE"
    L2_PIN = "L2_PIN"
    L2_UNPIN = "L2_UNPIN"
    L2_GC = "L2_GC"
    L1_RELOAD = "L1_RELOAD"
    L1_LOAD = "L1_LOAD"
    L1_REFUSED = "L1_REFUSED"
    L1_TORN = "L1_TORN"
    AGENT_CONFIG = "AGENT_CONFIG"
    ERROR = "ERROR"


@dataclass(frozen=True, kw_only=True)
class CacheEvent:
    """One event; `kind` is its name in the log, the fields its JSON keys."""

    kind: ClassVar[EventKind]

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, kw_only=True)
class ModelEvent(CacheEvent):
    """An event about one version of one model (`model` is "<namespace>/<name>")."""

    model: str
    version: str
