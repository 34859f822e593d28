"""The manifest is checked on the way in: a bad one never reaches the disk."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from modelcache.api.manifest import Manifest, ManifestFile, VersionIndex

SHA = "a" * 64
NOW = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)


def entry(path: str, size: int = 1) -> dict[str, object]:
    return {"path": path, "size": size, "sha256": SHA, "crc64": "1"}


def manifest(*paths: str, version: str = "v1") -> Manifest:
    return Manifest.model_validate(
        {"version": version, "created": NOW.isoformat(), "files": [entry(p) for p in paths]}
    )


def test_round_trip_keeps_every_field() -> None:
    original = manifest("unet/48.safetensors", "lora/20.safetensors")
    assert Manifest.from_json(original.to_json()) == original
    assert b'"schemaVersion": 1' in original.to_json()


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (("../escape",), "'..'"),
        (("/abs",), "absolute"),
        (("a", "a"), "listed twice"),
        (("a", "a/b"), "which is a file"),
    ],
)
def test_unsafe_or_ambiguous_paths_are_rejected(paths: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        manifest(*paths)


def test_version_with_a_slash_is_rejected() -> None:
    with pytest.raises(ValidationError, match="invalid version"):
        manifest("a", version="v1/../v2")


@pytest.mark.parametrize(
    "bad",
    [
        {"sha256": "A" * 64},
        {"sha256": "a" * 63},
        {"crc64": "-1"},
        {"crc64": str(2**64)},
        {"size": -1},
        {"extra": 1},
    ],
)
def test_bad_file_fields_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ManifestFile.model_validate({**entry("a"), **bad})


@given(st.lists(st.sampled_from(["v1", "v2", "v3", "v4"]), min_size=1, max_size=12))
def test_index_holds_each_version_once_oldest_first(versions: list[str]) -> None:
    index = VersionIndex()
    for step, version in enumerate(versions):
        published = Manifest(version=version, created=NOW + dt.timedelta(minutes=step), files=())
        index = index.with_version(published)
    names = [v.version for v in index.versions]
    assert sorted(names) == sorted(set(versions))
    created = [v.created for v in index.versions]
    assert created == sorted(created)
    assert VersionIndex.from_json(index.to_json()) == index
