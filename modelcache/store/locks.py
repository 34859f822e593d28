"""Inter-process locks (flock via filelock): several agents or a CLI may share one ROOT.

Instances are singletons per path, so a thread that holds a lock can take it again
(the engine holds a blob lock around `adopt_blob`, which takes it too). Order, to
stay deadlock-free: model lock, then gc lock, then blob lock; gc itself only
*tries* model and blob locks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


def _lock(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, is_singleton=True)


@contextmanager
def hold(path: Path) -> Iterator[None]:
    """Block until the lock at `path` is ours."""
    with _lock(path):
        yield


@contextmanager
def try_hold(path: Path) -> Iterator[bool]:
    """Take the lock if it is free; yields whether we got it (gc skips what others hold)."""
    lock = _lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def is_held_elsewhere(path: Path) -> bool:
    """Whether another holder has the lock right now (for tests and status)."""
    with try_hold(path) as got:
        return not got
