"""Pinned versions, persisted as models/<ns>/<name>/pins.json (retention never removes them)."""

from __future__ import annotations

import json
from pathlib import Path

from modelcache.store.durable import write_atomic
from modelcache.store.errors import StoreError
from modelcache.store.layout import is_version_name


def read(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return set()
    except ValueError as error:
        raise StoreError(f"unreadable pins file {path}: {error}") from None
    pins = data.get("pins") if isinstance(data, dict) else None
    if not isinstance(pins, list) or not all(isinstance(p, str) for p in pins):
        raise StoreError(f"unreadable pins file {path}: expected {{'pins': [versions...]}}")
    return {p for p in pins if is_version_name(p)}


def write(path: Path, pins: set[str]) -> None:
    if not pins:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, json.dumps({"pins": sorted(pins)}, indent=2).encode())
