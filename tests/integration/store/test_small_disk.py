"""DiskFull on real, small filesystems (a 16 MiB tmpfs, an ext4 with reserved blocks); skipped
where mount is not allowed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache.store import DiskFull, ModelRef, Store
from tests.integration.store.conftest import Ext4
from tests.unit.store.support import install

MIB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_the_watermark_stops_pulls_on_a_filling_disk(small_disk: Path) -> None:
    store = Store(small_disk / "cache", high_watermark=0.5)
    store.ensure_space(4 * MIB)
    with pytest.raises(DiskFull, match=r"need 9437184 bytes.*high watermark 50\.0%"):
        store.ensure_space(9 * MIB)

    model = ModelRef("default", "sdxl")
    install(store, model, "v1", {"base.bin": os.urandom(6 * MIB)})
    with pytest.raises(DiskFull) as caught:
        store.ensure_space(3 * MIB)
    assert str(small_disk / "cache") in str(caught.value)
    # a second version sharing the 6 MiB file needs only its own bytes
    store.ensure_space(MIB)
    install(store, model, "v2", {"base.bin": store.blob_path(_only_blob(store)).read_bytes()})
    assert store.usage().blob_bytes == 6 * MIB


def test_the_reserve_is_measured_on_the_real_disk(small_disk: Path) -> None:
    store = Store(small_disk / "cache", high_watermark=1.0, reserve_bytes=8 * MIB)
    store.ensure_space(7 * MIB)
    with pytest.raises(DiskFull, match="reserve 8388608 bytes"):
        store.ensure_space(9 * MIB)


def _only_blob(store: Store) -> str:
    (blob,) = (store.root / "blobs" / "sha256").glob("*/*")
    return blob.name


def _df(path: Path) -> tuple[int, int]:
    """(used, available) bytes as df prints them."""
    out = subprocess.run(
        ["df", "-B1", "--output=used,avail", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[-2]), int(out[-1])


def test_the_disk_full_message_gives_the_figures_of_the_disk(ext4: Ext4) -> None:
    """On an ext4 with 10% reserved for root: the free, used and total figures are statvfs's
    (and df's), the fraction full is df's Use%, and a pull one byte too large is one byte
    short, never "-1 bytes free"."""
    with ext4(32, reserved_percent=10) as disk:
        store = Store(disk / "cache", high_watermark=1.0)
        stats = os.statvfs(disk)
        assert stats.f_bfree > stats.f_bavail, "the reserve is real"
        free = stats.f_bavail * stats.f_frsize
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        assert _df(disk) == (used, free)
        usage = store.usage()
        assert (usage.used_bytes, usage.free_bytes, usage.total_bytes) == (used, free, used + free)

        with pytest.raises(DiskFull) as caught:
            store.ensure_space(free + 1)
        assert str(caught.value) == (
            f"not enough space under {store.root}: need {free + 1} bytes, {free} bytes free "
            f"of {used + free} (1 bytes short)"
        )
        store.ensure_space(free)  # all of it fits under a 100% watermark

        half = Store(disk / "cache", high_watermark=0.5)
        needed = (used + free) // 2
        with pytest.raises(DiskFull) as caught:
            half.ensure_space(needed)
        fraction = (used + needed) / (used + free)
        assert str(caught.value) == (
            f"not enough space under {store.root}: need {needed} bytes, {free} bytes free "
            f"of {used + free}; afterwards the disk would be {fraction:.1%} full "
            "(high watermark 50.0%)"
        )

        kept = Store(disk / "cache", high_watermark=1.0, reserve_bytes=MIB)
        with pytest.raises(DiskFull) as caught:
            kept.ensure_space(free - MIB + 1)
        assert str(caught.value).endswith(
            f"; afterwards {MIB - 1} bytes would be free (reserve {MIB} bytes)"
        )
