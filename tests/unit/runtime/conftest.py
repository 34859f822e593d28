from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.runtime import LoraRuntime, RuntimeConfig
from modelcache.store import Store
from tests.unit.runtime.support import MODEL, TinyNet, build


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "cache")


@pytest.fixture
def model() -> TinyNet:
    return build()


@pytest.fixture
def runtime(model: TinyNet) -> LoraRuntime:
    return LoraRuntime(model, RuntimeConfig(model=str(MODEL)))
