"""A fresh store per test, in pytest's tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.store import Store


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(root: Path) -> Store:
    return Store(root)
