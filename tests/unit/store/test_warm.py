"""Page-cache warm-up reads each file of a version once."""

from __future__ import annotations

import pytest

from modelcache.store import Store, VersionNotInstalled
from tests.unit.store.support import MODEL, install


def test_warm_reads_every_file_and_reports_progress(store: Store) -> None:
    big = b"x" * (9 * 1024 * 1024)  # more than one read chunk
    install(store, MODEL, "v1", {"big.bin": big, "small.bin": b"s", "copy.bin": b"s"})
    seen: list[int] = []
    total = store.warm(MODEL, "v1", progress=seen.append)
    assert total == len(big) + 1  # the two hard links to one blob are read once
    assert sum(seen) == total
    assert len(seen) >= 3
    assert store.warm(MODEL, "v1") == total


def test_warm_unknown_version(store: Store) -> None:
    with pytest.raises(VersionNotInstalled):
        store.warm(MODEL, "v9")
