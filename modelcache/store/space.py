"""Disk space: refuse a pull that would fill the filesystem holding ROOT.

Measured with statvfs, as `df` does: "free" is what an unprivileged writer may use
(f_bavail), "used" is what files hold (f_blocks - f_bfree), and the size is their sum,
so root-reserved blocks (or a quota's hidden share) are neither free nor used and the
fraction full is df's Use%.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from modelcache.store.errors import DiskFull


@dataclass(frozen=True)
class DiskStats:
    total_bytes: int
    free_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.total_bytes - self.free_bytes


@dataclass(frozen=True)
class Usage:
    """What `Store.usage()` reports: the filesystem, the blobs on it, and the limits in force."""

    root: Path
    total_bytes: int
    free_bytes: int
    used_bytes: int
    blob_bytes: int
    blob_count: int
    high_watermark: float
    reserve_bytes: int

    @property
    def used_fraction(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 1.0


def disk_stats(path: Path) -> DiskStats:
    stats = os.statvfs(path)
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    free = stats.f_bavail * stats.f_frsize
    return DiskStats(total_bytes=used + free, free_bytes=free)


def check_space(root: Path, needed: int, *, high_watermark: float, reserve_bytes: int) -> None:
    """Raise DiskFull if writing `needed` more bytes crosses the watermark or the reserve;
    the message gives the figures that decided it, each as statvfs measured it."""
    stats = disk_stats(root)
    after_used = stats.used_bytes + needed
    limit = int(stats.total_bytes * high_watermark)
    after_free = stats.free_bytes - needed
    if after_used <= limit and after_free >= reserve_bytes:
        return
    head = (
        f"not enough space under {root}: need {needed} bytes, {stats.free_bytes} bytes free "
        f"of {stats.total_bytes}"
    )
    if after_free < 0:
        raise DiskFull(f"{head} ({-after_free} bytes short)")
    if after_used > limit:
        fraction = after_used / stats.total_bytes
        raise DiskFull(
            f"{head}; afterwards the disk would be {fraction:.1%} full "
            f"(high watermark {high_watermark:.1%})"
        )
    raise DiskFull(
        f"{head}; afterwards {after_free} bytes would be free (reserve {reserve_bytes} bytes)"
    )
