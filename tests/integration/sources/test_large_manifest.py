"""Large manifests through the engine's real pull path (SeaweedFS via boto3, and a directory):
100,000 entries sharing one blob (more than ext4's 65,000 links) are pulled in seconds with
bounded memory; a manifest exactly at its cap is pulled, one byte past it is refused, naming
the cap; a 100,000-entry manifest with one duplicate path is refused in seconds."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import tracemalloc
from pathlib import Path

import pytest

from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import EventLog
from modelcache.api.manifest import MANIFEST_MAX_BYTES, Manifest, ManifestFile
from modelcache.sources import SourceError
from modelcache.store import ModelRef, Store
from modelcache.testing import ObjectStore
from tests.integration.sources.conftest import Location, make_location

MiB = 1024 * 1024
MODEL = ModelRef("default", "many-files")
EMPTY = ManifestFile(path="x", size=0, sha256=hashlib.sha256(b"").hexdigest(), crc64="0")
HUNDRED_K = [f"shards/{i // 1000:03d}/{i:06d}.json" for i in range(100_000)]


@pytest.fixture(params=["s3", "file"])
def location(
    request: pytest.FixtureRequest,
    store_env: ObjectStore,
    tmp_path: Path,
    http_root: tuple[Path, str],
) -> Location:
    return make_location(request.param, store_env, tmp_path, http_root)


@pytest.fixture
def engine(tmp_path: Path) -> CacheEngine:
    store = Store(tmp_path / "cache")
    return CacheEngine(store, EventLog(tmp_path / "events.jsonl"), warm_after_pull=False)


def manifest_of(paths: list[str]) -> Manifest:
    """Every path an empty file: one blob shared by all of them, as empty files are."""
    files = [EMPTY.model_copy(update={"path": path}) for path in paths]
    return Manifest.model_validate(
        {"version": "v1", "created": dt.datetime(2026, 12, 1, tzinfo=dt.UTC), "files": files}
    )


def publish_raw(location: Location, paths: list[str], document: bytes | None = None) -> None:
    """Written directly (the blob's one object, then the manifest), as a publish would."""
    location.put(f"v1/{paths[0]}", b"")
    location.put("v1/manifest.json", document or manifest_of(paths).to_json())


@pytest.mark.timeout(300)  # a hang guard; it takes about 15 s
def test_100k_entries_sharing_one_blob_are_pulled_in_seconds_with_bounded_memory(
    location: Location, engine: CacheEngine
) -> None:
    publish_raw(location, HUNDRED_K)
    url = location.client.url.raw
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = engine.pull(MODEL, url, "v1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.monotonic() - started
    assert (result.files, result.files_downloaded) == (100_000, 1)
    # ~25 MB of JSON parsed into 100,000 entries (twice: L3's and the store's copy)
    assert peak < 256 * MiB, f"peak {peak / MiB:.0f} MiB"
    assert seconds < 240, f"{seconds:.0f} s"
    print(f"pulled 100,000 entries in {seconds:.1f} s, peak {peak / MiB:.0f} MiB traced")

    engine.flip(MODEL, "v1")
    current = engine.store.current_path(MODEL)
    assert all((current / path).stat().st_size == 0 for path in HUNDRED_K)
    engine.store.remove_model(MODEL)
    engine.store.gc()
    assert list((engine.store.root / "blobs" / "sha256").glob("*/*")) == []


@pytest.mark.timeout(120)  # a hang guard: the quadratic check took hours
def test_100k_entries_with_one_duplicate_are_refused_in_seconds(
    location: Location, engine: CacheEngine
) -> None:
    paths = [*HUNDRED_K, HUNDRED_K[12_345]]
    files = [{**EMPTY.model_dump(), "path": path} for path in paths]
    document = {"schemaVersion": 1, "version": "v1", "created": "2026-12-01T00:00:00Z"}
    publish_raw(location, paths, json.dumps({**document, "files": files}).encode())
    with pytest.raises(SourceError, match=f"file '{HUNDRED_K[12_345]}' is listed twice"):
        engine.pull(MODEL, location.client.url.raw, "v1")
    assert not engine.store.has_version(MODEL, "v1")


def test_a_manifest_at_its_cap_is_pulled_and_one_byte_past_it_is_refused(
    location: Location, engine: CacheEngine
) -> None:
    paths = ["weights/adapter.safetensors", "config.json"]
    document = manifest_of(paths).to_json()
    at_cap = document[:-1] + b" " * (MANIFEST_MAX_BYTES - len(document)) + b"}"
    assert len(at_cap) == MANIFEST_MAX_BYTES
    publish_raw(location, paths, at_cap)
    assert engine.pull(MODEL, location.client.url.raw, "v1").files == 2

    other = ModelRef("default", "too-large")
    location.put("v1/manifest.json", at_cap[:-1] + b" }")
    with pytest.raises(SourceError) as caught:
        engine.pull(other, location.client.url.raw, "v1")
    message = str(caught.value)
    assert f"larger than its cap of {MANIFEST_MAX_BYTES:,} bytes" in message
    assert "manifest.json" in message
    assert not engine.store.has_version(other, "v1")
