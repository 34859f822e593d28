"""Real, small filesystems for store tests: a loop-mounted ext4 (its reserved blocks and its
65,000-link limit are what production disks have); skipped where mounting is not allowed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

MIB = 1024 * 1024

Ext4 = Callable[..., AbstractContextManager[Path]]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture
def ext4(tmp_path: Path) -> Ext4:
    """`with ext4(size_mib, inodes=..., reserved_percent=...) as mountpoint:` a fresh ext4."""

    @contextmanager
    def mount(size_mib: int, *, inodes: int = 4096, reserved_percent: int = 5) -> Iterator[Path]:
        image, mountpoint = tmp_path / "ext4.img", tmp_path / "ext4"
        with image.open("wb") as handle:
            handle.truncate(size_mib * MIB)
        made = _run(
            "mkfs.ext4", "-q", "-F", "-N", str(inodes), "-m", str(reserved_percent),
            "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image),
        )  # fmt: skip
        if made.returncode != 0:
            pytest.skip(f"cannot make an ext4 filesystem here: {made.stderr.strip()}")
        mountpoint.mkdir()
        mounted = _run("mount", "-o", "loop", str(image), str(mountpoint))
        if mounted.returncode != 0:
            pytest.skip(f"cannot loop-mount an ext4 here: {mounted.stderr.strip()}")
        try:
            yield mountpoint
        finally:
            _run("umount", str(mountpoint))
            image.unlink(missing_ok=True)

    return mount
