"""Pinned versions, persisted as models/<ns>/<name>/pins.json (retention never removes them)."""

from __future__ import annotations

import json
from pathlib import Path

from modelcache.fs import FileRefused, read_capped, write_atomic
from modelcache.problems import one_line
from modelcache.store.errors import StoreError
from modelcache.store.layout import is_version_name

PINS_MAX_BYTES = 1024 * 1024
"""pins.json lists version names (at most 128 characters each): 1 MiB holds thousands."""


def read(path: Path) -> set[str]:
    try:
        data = json.loads(read_capped(path, PINS_MAX_BYTES, what="pins file"))
    except FileNotFoundError:
        return set()
    except FileRefused as error:
        raise StoreError(str(error)) from None
    except ValueError as error:
        raise StoreError(f"unreadable pins file {path}: {one_line(error)}") from None
    pins = data.get("pins") if isinstance(data, dict) else None
    if not isinstance(pins, list) or not all(isinstance(p, str) for p in pins):
        raise StoreError(f"unreadable pins file {path}: expected {{'pins': [versions...]}}")
    return {p for p in pins if is_version_name(p)}


def write(path: Path, pins: set[str]) -> None:
    if not pins:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, json.dumps({"pins": sorted(pins)}, indent=2).encode())
