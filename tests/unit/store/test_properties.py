"""Property test: random sequences of store operations, with restarts, keep every invariant.

A reference model (what should be installed, live, the rollback target, pinned) is
compared with what a Store reads back from disk after each step.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from modelcache.store import ModelRef, ProtectedVersion, Store, StoreError, VersionNotInstalled
from tests.unit.store.invariants import check_store
from tests.unit.store.support import install

MODELS = [ModelRef("default", "sdxl"), ModelRef("studio", "lora")]
VERSIONS = [f"v{n}" for n in range(5)]
POOL = [b"", b"a", b"bb" * 10, b"ccc" * 100, b"dddd" * 1000]

models = st.sampled_from(MODELS)
versions = st.sampled_from(VERSIONS)


def files_of(version: str) -> dict[str, bytes]:
    n = int(version[1:])
    return {"base.bin": POOL[4], "w.bin": POOL[n], "dir/x.bin": POOL[(n + 2) % 5]}


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-prop-"))
        self.store = Store(self.dir / "root")
        self.installed: dict[ModelRef, list[str]] = {m: [] for m in MODELS}  # oldest first
        self.current: dict[ModelRef, str | None] = dict.fromkeys(MODELS)
        self.previous: dict[ModelRef, str | None] = dict.fromkeys(MODELS)
        self.pinned: dict[ModelRef, set[str]] = {m: set() for m in MODELS}

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _protected(self, model: ModelRef) -> set[str]:
        return {v for v in (self.current[model], self.previous[model]) if v} | self.pinned[model]

    @rule(model=models, version=versions)
    def install(self, model: ModelRef, version: str) -> None:
        install(self.store, model, version, files_of(version))
        if version not in self.installed[model]:
            self.installed[model].append(version)

    @rule(model=models, version=versions)
    def flip(self, model: ModelRef, version: str) -> None:
        if version not in self.installed[model]:
            try:
                self.store.flip(model, version)
            except VersionNotInstalled:
                return
            raise AssertionError("flip to an uninstalled version succeeded")
        old = self.store.flip(model, version)
        assert old == self.current[model]
        if old is not None and old != version:
            self.previous[model] = old
        self.current[model] = version

    @rule(model=models)
    def rollback(self, model: ModelRef) -> None:
        if self.previous[model] is None:
            try:
                self.store.rollback(model)
            except StoreError:
                return
            raise AssertionError("rollback without a previous version succeeded")
        target = self.store.rollback(model)
        assert target == self.previous[model]
        self.previous[model], self.current[model] = self.current[model], target

    @rule(model=models, keep=st.integers(1, 4), protect=st.sets(versions, max_size=2))
    def retain(self, model: ModelRef, keep: int, protect: set[str]) -> None:
        removed = self.store.retain(model, keep, protect)
        safe = self._protected(model) | protect
        assert not set(removed) & safe
        expected: list[str] = []
        excess = len(self.installed[model]) - keep
        for version in self.installed[model]:
            if len(expected) < excess and version not in safe:
                expected.append(version)
        assert removed == expected
        self.installed[model] = [v for v in self.installed[model] if v not in removed]

    @rule(model=models, version=versions)
    def remove(self, model: ModelRef, version: str) -> None:
        try:
            self.store.remove_version(model, version)
        except ProtectedVersion:
            assert version in self._protected(model)
            return
        except VersionNotInstalled:
            assert version not in self.installed[model]
            return
        assert version not in self._protected(model)
        self.installed[model].remove(version)

    @precondition(lambda self: any(self.installed.values()))
    @rule(model=models, version=versions, pin=st.booleans())
    def pin(self, model: ModelRef, version: str, pin: bool) -> None:
        if not pin:
            self.store.unpin(model, version)
            self.pinned[model].discard(version)
        elif version in self.installed[model]:
            self.store.pin(model, version)
            self.pinned[model].add(version)

    @rule()
    def gc(self) -> None:
        self.store.gc(hold_max_age=0, tmp_max_age=0)
        check_store(self.store, after_gc=True)

    @rule()
    def restart(self) -> None:
        self.store = Store(self.store.root)

    @invariant()
    def disk_matches_the_model(self) -> None:
        for model in MODELS:
            assert [v.version for v in self.store.versions(model)] == self.installed[model]
            assert self.store.current(model) == self.current[model]
            assert self.store.previous(model) == self.previous[model]
            assert self.store.pins(model) == self.pinned[model]
        check_store(self.store)


StoreMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreMachine = StoreMachine.TestCase
