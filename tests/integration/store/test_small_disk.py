"""DiskFull on a real, small filesystem (a 16 MiB tmpfs); skipped where mount is not allowed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache.store import DiskFull, ModelRef, Store
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
