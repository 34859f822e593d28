"""The node's cache root as every component names it: where it is unless told otherwise, and
the event log the agent keeps in it. `modelcache/store/layout.py` maps the rest of the root;
these two live here because the CLI needs them without the store's dependencies."""

from __future__ import annotations

from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/modelcache")
"""The cache root (L2) on a node: the agent's hostPath, the pods' read-only mount."""

ROOT_ENV = "MODELCACHE_ROOT"
"""The environment variable that names another root (the CLI, the example server)."""

EVENT_LOG_NAME = "events.jsonl"
"""The cache event log, one JSON line per event, at the top of the root."""


def event_log_path(root: Path) -> Path:
    """Where the event log of the cache at `root` is written."""
    return root / EVENT_LOG_NAME
