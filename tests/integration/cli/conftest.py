"""A `modelcache` CLI per test: its own cache root, credentials for the session's object store."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from modelcache.testing import ObjectStore
from tests.integration.cli.support import BUCKET, Cli


@pytest.fixture
def cli(object_store: ObjectStore, tmp_path: Path) -> Cli:
    object_store.create_bucket(BUCKET)
    env = {
        **os.environ,
        "MODELCACHE_ROOT": str(tmp_path / "cache"),
        "OSS_ENDPOINT": object_store.endpoint,
        "AWS_ENDPOINT_URL": object_store.endpoint,
        "AWS_ACCESS_KEY_ID": "modelcache",
        "AWS_SECRET_ACCESS_KEY": "modelcache-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "COLUMNS": "200",
    }
    for name in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"):
        env.pop(name, None)
    return Cli(tmp_path / "cache", env)


@pytest.fixture
def prefix() -> str:
    """A fresh L3 location per test, so tests never see each other's versions."""
    return f"lora-{uuid.uuid4().hex[:8]}"
