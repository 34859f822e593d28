"""Disk space: refuse a pull that would fill the filesystem holding ROOT.

Measured with statvfs; "free" is what an unprivileged writer may use (f_bavail),
so the root-reserved blocks count as used and the check errs on the safe side.
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
    return DiskStats(
        total_bytes=stats.f_blocks * stats.f_frsize, free_bytes=stats.f_bavail * stats.f_frsize
    )


def check_space(root: Path, needed: int, *, high_watermark: float, reserve_bytes: int) -> None:
    """Raise DiskFull if writing `needed` more bytes crosses the watermark or the reserve."""
    stats = disk_stats(root)
    after_used = stats.used_bytes + needed
    limit = int(stats.total_bytes * high_watermark)
    after_free = stats.free_bytes - needed
    if after_used <= limit and after_free >= reserve_bytes:
        return
    fraction = after_used / stats.total_bytes if stats.total_bytes else 1.0
    raise DiskFull(
        f"not enough space under {root}: need {needed} bytes, {stats.free_bytes} bytes free "
        f"of {stats.total_bytes}; afterwards the disk would be {fraction:.1%} full "
        f"(high watermark {high_watermark:.1%}) with {after_free} bytes free "
        f"(reserve {reserve_bytes} bytes)"
    )
