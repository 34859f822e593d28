"""read_capped: a document is read only when it is a regular file within its cap, and a
special file in its place is refused at once, never waited on."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache.fs import NotARegularFile, TooLarge, read_capped


def test_a_regular_file_within_its_cap_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(b"x" * 100)
    assert read_capped(path, 100) == b"x" * 100


@given(size=st.integers(0, 300), limit=st.integers(0, 300))
def test_the_cap_is_exact(tmp_path_factory: pytest.TempPathFactory, size: int, limit: int) -> None:
    path = tmp_path_factory.mktemp("cap") / "doc"
    path.write_bytes(b"a" * size)
    if size <= limit:
        assert read_capped(path, limit) == b"a" * size
    else:
        with pytest.raises(TooLarge, match=f"cap of {limit:,} bytes"):
            read_capped(path, limit)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFile, match=r"config\.yaml is a FIFO"):
        read_capped(fifo, 1024, what="config")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotARegularFile, match="is a directory"):
        read_capped(tmp_path, 1024)


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(OSError, match=r"No such device|socket"):
            read_capped(path, 1024)


def test_a_character_device_is_refused_and_its_bytes_never_read() -> None:
    with pytest.raises(NotARegularFile, match="/dev/zero is a character device"):
        read_capped("/dev/zero", 1024)


def test_a_missing_file_is_the_usual_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_capped(tmp_path / "absent", 10)
