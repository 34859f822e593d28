"""Crash leftovers: staging dirs, half-deleted dirs, temporary links or files, and blob
copies that were being written (tmp/<digest>.copy).

None of them is ever visible as a version, a blob or `current`, so removing them is
always safe *if* no live process is using them: callers hold the model lock, and a
copy in progress holds its blob's lock.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from modelcache.api.names import ModelRef
from modelcache.fs import DELETING_PREFIX, TMP_SUFFIX, temp_prefix
from modelcache.store import locks
from modelcache.store.layout import (
    COPY_SUFFIX,
    CURRENT,
    PINS,
    PREVIOUS,
    STAGING_PREFIX,
    Layout,
    is_sha256,
)

_TMP_LINKS = (CURRENT + TMP_SUFFIX, PREVIOUS + TMP_SUFFIX)
_TMP_PINS = temp_prefix(PINS)


def clean_model(layout: Layout, model: ModelRef) -> int:
    """Remove one model's leftovers (caller holds its lock); returns how many."""
    removed = 0
    model_dir = layout.model_dir(model)
    for name in _TMP_LINKS:
        path = model_dir / name
        if path.is_symlink() or path.exists():
            path.unlink()
            removed += 1
    try:
        entries = list(os.scandir(model_dir))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if entry.name.startswith(_TMP_PINS):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    try:
        versions = list(os.scandir(layout.versions_dir(model)))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in versions:
        if entry.name.startswith((STAGING_PREFIX, DELETING_PREFIX)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def clean_deleted_models(layout: Layout) -> int:
    """Model dirs renamed away by `remove_model` but not fully deleted (nobody else uses them)."""
    removed = 0
    try:
        namespaces = list(os.scandir(layout.models_dir))
    except FileNotFoundError:
        return 0
    for namespace in namespaces:
        if namespace.name.startswith(DELETING_PREFIX):
            shutil.rmtree(namespace.path, ignore_errors=True)
            removed += 1
            continue
        if not namespace.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(namespace.path):
            if entry.name.startswith(DELETING_PREFIX):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
    return removed


def clean_blob_copies(layout: Layout) -> int:
    """Half-written blob copies (see `links`) whose blob nobody holds: a crash's leftovers."""
    removed = 0
    try:
        entries = list(os.scandir(layout.tmp_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        digest = entry.name.removesuffix(COPY_SUFFIX)
        if digest == entry.name or not is_sha256(digest):
            continue
        with locks.try_hold(layout.blob_lock(digest)) as got:
            if got:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed
