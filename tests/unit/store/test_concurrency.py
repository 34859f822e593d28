"""Several processes sharing one root: pulls fetch a blob once; flips, installs, retention
and gc keep the tree consistent, and `current` resolves at every moment a reader looks."""

from __future__ import annotations

import multiprocessing
import os
import random
from pathlib import Path

from modelcache.store import ModelRef, Store, StoreError
from tests.unit.store.invariants import check_store
from tests.unit.store.support import MODEL, install, sha

_CTX = multiprocessing.get_context("spawn")
MODELS = [MODEL, ModelRef("studio", "lora")]
POOL = [f"content {n}".encode() * (n + 1) for n in range(6)]


def files_of(version: str) -> dict[str, bytes]:
    """Deterministic content per version (versions are immutable), with lots of sharing."""
    n = int(version.removeprefix("v"))
    return {"base.bin": POOL[0], "w.bin": POOL[n % 6], "sub/x.bin": POOL[(n + 1) % 6]}


def _pull_once(root: str, counter: str, barrier: object) -> None:
    store = Store(Path(root))
    data = b"the one blob" * 1000
    digest = sha(data)
    barrier.wait()  # type: ignore[attr-defined]
    with store.blob_lock(digest):
        if not store.has_blob(digest):
            with open(counter, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            store.tmp_path(digest).write_bytes(data)
            store.adopt_blob(store.tmp_path(digest), digest)


def test_concurrent_pulls_of_one_blob_download_it_once(tmp_path: Path) -> None:
    root, counter = tmp_path / "cache", tmp_path / "downloads"
    Store(root)
    barrier = _CTX.Barrier(3)
    procs = [
        _CTX.Process(target=_pull_once, args=(str(root), str(counter), barrier)) for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    assert len(counter.read_text().splitlines()) == 1
    assert Store(root).usage().blob_count == 1


def _churn(root: str, seed: int, steps: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - a reproducible test schedule
    store = Store(Path(root))
    for _ in range(steps):
        model = rng.choice(MODELS)
        version = f"v{rng.randrange(6)}"
        op = rng.random()
        try:
            if op < 0.45:
                install(store, model, version, files_of(version))
                store.flip(model, version)
            elif op < 0.6:
                store.rollback(model)
            elif op < 0.8:
                store.retain(model, keep=2)
            elif op < 0.9:
                store.gc(hold_max_age=0)
            else:
                store.remove_version(model, version)
        except StoreError:
            pass  # refused (protected, not installed, no previous, blob gc'd meanwhile): fine


def _watch(root: str, stop: object, failures: object) -> None:
    """A reader: whenever `current` exists, it must resolve to an installed version."""
    while not stop.is_set():  # type: ignore[attr-defined]
        for model in MODELS:
            link = Path(root) / "models" / model.namespace / model.name / "current"
            if not link.is_symlink():
                continue
            try:
                os.stat(link / "manifest.json")
            except FileNotFoundError:
                failures.value += 1  # type: ignore[attr-defined]


def test_concurrent_writers_keep_the_tree_consistent(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    Store(root)
    stop, failures = _CTX.Event(), _CTX.Value("i", 0)
    watcher = _CTX.Process(target=_watch, args=(str(root), stop, failures))
    watcher.start()
    writers = [_CTX.Process(target=_churn, args=(str(root), seed, 60)) for seed in range(3)]
    for proc in writers:
        proc.start()
    for proc in writers:
        proc.join(300)
    stop.set()
    watcher.join(60)
    assert [proc.exitcode for proc in writers] == [0, 0, 0]
    assert watcher.exitcode == 0
    assert failures.value == 0

    store = Store(root)
    store.gc(hold_max_age=0)
    check_store(store, after_gc=True)
    names = [p.name for p in root.rglob("*")]
    assert not [n for n in names if n.startswith((".staging-", ".deleting-")) or n.endswith(".tmp")]
