"""A Store over an existing root rebuilds its state from disk and clears crash leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from modelcache.store import Store
from tests.unit.store.support import LORA, MODEL, install, sha, tree

_HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _crash_leftovers(root: Path) -> dict[str, Path]:
    model_dir = root / "models/default/sdxl"
    staging = model_dir / "versions/.staging-v3-0badc0de"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub/half.bin").write_bytes(b"half-writ")
    deleting = model_dir / "versions/.deleting-v0-12345678"
    deleting.mkdir()
    os.symlink("versions/v3", model_dir / "current.tmp")
    (model_dir / ".pins.json.tmp-abcdef01").write_text("{")
    gone_model = root / "models/default/.deleting-old-87654321"
    (gone_model / "versions/v1").mkdir(parents=True)
    part = root / "tmp" / f"{sha(b'resumable')}.part"
    part.write_bytes(b"resu")
    return {"staging": staging, "deleting": deleting, "gone": gone_model, "part": part}


def test_restart_after_a_crash_recovers_the_right_state(root: Path) -> None:
    first = Store(root)
    install(first, MODEL, "v1", {"w.bin": b"one", "base.bin": b"base"})
    install(first, MODEL, "v2", {"w.bin": b"two", "base.bin": b"base"})
    install(first, LORA, "v7", {"l.bin": b"lora"})
    first.flip(MODEL, "v1")
    first.flip(MODEL, "v2")
    first.pin(MODEL, "v1")
    first.flip(LORA, "v7")
    left = _crash_leftovers(root)
    del first

    second = Store(root)

    assert not left["staging"].exists()
    assert not left["deleting"].exists()
    assert not left["gone"].exists()
    assert not (root / "models/default/sdxl/current.tmp").is_symlink()
    assert not any(p.name.startswith(".pins") for p in (root / "models/default/sdxl").iterdir())
    assert left["part"].exists()  # a partial download is resumable, not garbage
    assert second.models() == [MODEL, LORA]
    assert [v.version for v in second.versions(MODEL)] == ["v1", "v2"]
    assert (second.current(MODEL), second.previous(MODEL)) == ("v2", "v1")
    assert second.pins(MODEL) == {"v1"}
    assert second.current(LORA) == "v7"
    assert second.usage().blob_count == 4
    assert (second.current_path(MODEL) / "w.bin").read_bytes() == b"two"


def test_gc_clears_leftovers_too(root: Path) -> None:
    store = Store(root)
    install(store, MODEL, "v1", {"w.bin": b"one"})
    _crash_leftovers(root)
    result = store.gc(tmp_max_age=0)
    assert result.leftovers_removed >= 4
    assert result.tmp_removed == 1
    assert not any(".staging" in name or ".deleting" in name for name in tree(root))


def test_recovery_leaves_a_model_alone_while_another_process_holds_its_lock(root: Path) -> None:
    store = Store(root)
    install(store, MODEL, "v1", {"w.bin": b"one"})
    staging = root / "models/default/sdxl/versions/.staging-v2-00000000"
    staging.mkdir()
    lock = root / "locks/models/default/sdxl.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        Store(root)
        assert staging.exists()  # someone may be building it right now
    finally:
        holder.kill()
        holder.wait()
    Store(root)
    assert not staging.exists()
