"""More files sharing one blob than ext4 allows links to one inode (65,000): the version
installs, flips and reads back, and gc after its removal leaves nothing behind."""

from __future__ import annotations

import os
import time

from modelcache.store import ModelRef, Store
from tests.integration.store.conftest import Ext4
from tests.unit.store.invariants import blob_inodes
from tests.unit.store.support import manifest, put_blob, sha

MODEL = ModelRef("default", "many-empty-files")
HANG_GUARD_SECONDS = 120.0  # it takes about 10 s


def test_a_version_with_more_shared_files_than_the_link_limit(ext4: Ext4) -> None:
    with ext4(256, inodes=16384) as disk:
        link_max = os.pathconf(disk, "PC_LINK_MAX")
        assert link_max == 65_000, "ext4's limit, which the store must get past"
        files = {f"d{i // 1000:02d}/{i:05d}.json": b"" for i in range(link_max + 5_000)}
        store = Store(disk / "cache")
        started = time.monotonic()

        put_blob(store, b"")  # fetched once, as a pull does
        store.install_version(MODEL, manifest("v1", files))
        store.flip(MODEL, "v1")

        blobs = sorted((store.root / "blobs" / "sha256").glob("*/*"))
        assert [p.name for p in blobs] == [sha(b""), f"{sha(b'')}.1"], "one verified copy"
        assert all(os.stat(p).st_nlink <= link_max for p in blobs)
        assert sum(os.stat(p).st_nlink - 1 for p in blobs) == len(files)
        current, good = store.current_path(MODEL), blob_inodes(store, sha(b""))
        for path in files:
            assert (current / path).read_bytes() == b""
            assert os.stat(current / path).st_ino in good

        store.remove_model(MODEL)
        store.gc()
        assert list((store.root / "blobs" / "sha256").glob("*/*")) == []
        assert [p for p in (store.root / "tmp").rglob("*") if p.is_file()] == []
        assert time.monotonic() - started < HANG_GUARD_SECONDS
