"""The one crash-safe writer: a file is replaced whole or not at all, and what a crash leaves
behind carries the name that recovery looks for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelcache.fs import atomic_write, temp_prefix, write_atomic

KILLED_MIDWAY = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from modelcache.fs import atomic_write

    with atomic_write(Path(sys.argv[1])) as fd:
        os.write(fd, b"half of the new")
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_stream_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_bytes(b"old")
    with atomic_write(target) as fd:
        for chunk in (b"new ", b"content"):
            os.write(fd, chunk)
        assert target.read_bytes() == b"old"  # nothing visible before the block ends
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_block_that_fails_leaves_the_old_file_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_bytes(b"old")

    def write_half_then_fail() -> None:
        with atomic_write(target) as fd:
            os.write(fd, b"half")
            raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        write_half_then_fail()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_replace_that_fails_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(IsADirectoryError):  # a file cannot be renamed over a directory
        write_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


@pytest.mark.timeout(60)  # the guard: the child kills itself at once
def test_a_write_killed_midway_leaves_the_old_file_and_a_temporary_recovery_knows(
    tmp_path: Path,
) -> None:
    target = tmp_path / "pins.json"
    target.write_bytes(b"old")
    child = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, str(target)], check=False)
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(temp_prefix("pins.json"))
