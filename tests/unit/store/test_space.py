"""Disk space: DiskFull before a pull crosses the watermark or the reserve; usage numbers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from modelcache.store import DiskFull, Store
from tests.unit.store.support import MODEL, install


def test_a_pull_above_the_watermark_is_refused_with_the_numbers(root: Path) -> None:
    store = Store(root, high_watermark=0.000001)
    with pytest.raises(DiskFull) as caught:
        store.ensure_space(1000)
    message = str(caught.value)
    assert "need 1000 bytes" in message
    assert "bytes free" in message
    assert "high watermark 0.0%" in message
    assert str(store.root) in message


def test_the_watermark_counts_the_pull_itself(root: Path) -> None:
    Store(root, high_watermark=1.0).ensure_space(0)  # the cache dir exists; any disk fill
    stats = os.statvfs(root)
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    free = stats.f_bavail * stats.f_frsize
    total = used + free  # df's Use% is used / (used + available)
    gib = 1024**3
    store = Store(root, high_watermark=min((total - free + gib) / total, 1.0))
    store.ensure_space(1024**2)  # leaves ~1 GiB under the watermark
    with pytest.raises(DiskFull, match=f"need {2 * gib} bytes"):
        store.ensure_space(2 * gib)
    with pytest.raises(DiskFull):
        Store(root, high_watermark=1.0).ensure_space(free + gib)


def test_the_reserve_is_kept_free(root: Path) -> None:
    store = Store(root, reserve_bytes=10**18)
    with pytest.raises(DiskFull, match=r"reserve 1000000000000000000 bytes"):
        store.ensure_space(1)
    Store(root, high_watermark=1.0, reserve_bytes=0).ensure_space(1)  # however full the disk


def test_limits_are_validated(root: Path) -> None:
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="high_watermark"):
            Store(root, high_watermark=bad)
    with pytest.raises(ValueError, match="reserve_bytes"):
        Store(root, reserve_bytes=-1)


def test_usage_reports_the_filesystem_and_the_blobs(root: Path) -> None:
    store = Store(root, high_watermark=0.9, reserve_bytes=123)
    install(store, MODEL, "v1", {"a.bin": b"a" * 100, "b.bin": b"b" * 50, "c.bin": b"a" * 100})
    usage = store.usage()
    assert (usage.blob_count, usage.blob_bytes) == (2, 150)
    assert usage.total_bytes > 0
    assert usage.free_bytes + usage.used_bytes == usage.total_bytes
    assert 0 < usage.used_fraction < 1
    assert (usage.high_watermark, usage.reserve_bytes, usage.root) == (0.9, 123, store.root)


@pytest.mark.parametrize("extra", [10**10, 10**15])
def test_a_pull_larger_than_the_free_space_says_how_much_is_missing(root: Path, extra: int) -> None:
    """The figures are consistent and never negative (the disk is shared: read them back)."""
    store = Store(root, high_watermark=1.0)
    needed = store.usage().free_bytes + extra
    with pytest.raises(DiskFull) as caught:
        store.ensure_space(needed)
    figures = re.search(
        r"need (\d+) bytes, (\d+) bytes free of (\d+) \((\d+) bytes short\)$", str(caught.value)
    )
    assert figures is not None, str(caught.value)
    need, free, total, short = map(int, figures.groups())
    assert need == needed
    assert short == need - free > 0
    assert free <= total
