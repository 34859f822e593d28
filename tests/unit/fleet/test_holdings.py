"""The in-flight registry: what the server sees of a download, piece by piece, and
nothing once the download has ended."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modelcache.fleet import Holding, InFlight

SHA = "ab" * 32


def test_a_download_shows_its_verified_pieces_until_it_ends(tmp_path: Path) -> None:
    registry = InFlight()
    assert registry.lookup(SHA) is None
    with registry.begin(SHA, tmp_path / "part", 10 * 1024, 4096) as handle:
        assert handle.piece_count == 3
        assert registry.lookup(SHA) == Holding(tmp_path / "part", 10 * 1024, 4096, frozenset())
        handle.verified(2)
        handle.verified(0)
        held = registry.lookup(SHA)
        assert held is not None
        assert held.verified == {0, 2}
        with pytest.raises(ValueError, match="piece 3 of a 3-piece blob"):
            handle.verified(3)
    assert registry.lookup(SHA) is None


def test_a_second_download_of_a_blob_takes_over_and_the_first_ending_leaves_it(
    tmp_path: Path,
) -> None:
    registry = InFlight()
    first = registry.begin(SHA, tmp_path / "one", 100, 4096)
    second = registry.begin(SHA, tmp_path / "two", 100, 4096)
    first.verified(0)
    first.end()
    held = registry.lookup(SHA)
    assert held is not None
    assert (held.path, held.verified) == (tmp_path / "two", frozenset())
    second.end()
    assert registry.lookup(SHA) is None


def test_pieces_verified_from_many_threads_are_all_seen(tmp_path: Path) -> None:
    registry = InFlight()
    handle = registry.begin(SHA, tmp_path / "part", 4096 * 800, 4096)

    def verify_every_eighth(first: int) -> None:
        for index in range(first, 800, 8):
            handle.verified(index)

    threads = [threading.Thread(target=verify_every_eighth, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = registry.lookup(SHA)
    assert held is not None
    assert held.verified == frozenset(range(800))
