"""The manifest is checked on the way in: a bad one never reaches the disk."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelcache.api.manifest import (
    INDEX_MAX_BYTES,
    MANIFEST_MAX_BYTES,
    Manifest,
    ManifestFile,
    VersionIndex,
    check_size,
)
from modelcache.problems import one_line

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
    assert b'"schemaVersion": 2' in original.to_json()  # what this version writes


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


def old_paths_problem(paths: list[str]) -> str | None:
    """The quadratic definition the validator had before (the oracle): a duplicate first,
    then a file that lies below another file."""
    unique = set(paths)
    if len(unique) != len(paths):
        return "listed twice"
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in unique:
                return "which is a file"
    return None


def new_paths_problem(paths: list[str]) -> str | None:
    try:
        manifest(*paths)
    except ValidationError as error:
        message = str(error)
        return "listed twice" if "listed twice" in message else "which is a file"
    return None


# '-' sorts before '/' and '0' after it: the orders a sort-based check could get wrong.
SEGMENTS = st.sampled_from(["a", "b", "a-", "a0", "ab", "a.b", "é"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join)


@settings(max_examples=500, deadline=None)
@given(st.lists(PATHS, min_size=1, max_size=12))
def test_linear_path_checks_refuse_exactly_what_the_quadratic_ones_did(paths: list[str]) -> None:
    assert new_paths_problem(paths) == old_paths_problem(paths)


@settings(max_examples=200, deadline=None)
@given(st.lists(PATHS, min_size=1, max_size=12, unique=True), st.data())
def test_the_file_below_a_file_is_named(paths: list[str], data: st.DataObject) -> None:
    outer = data.draw(st.sampled_from(paths))
    inner = f"{outer}/{data.draw(SEGMENTS)}"
    if inner in paths or old_paths_problem([*paths, inner]) != "which is a file":
        return
    with pytest.raises(ValidationError, match=" is inside ") as caught:
        manifest(*paths, inner)
    named = re.search(r"'([^']+)' is inside '([^']+)', which is a file", str(caught.value))
    assert named is not None
    below, above = named.groups()
    assert below.startswith(above + "/")
    assert {below, above} <= {*paths, inner}


HUNDRED_K = [f"shards/{i // 1000:03d}/part-{i:06d}.safetensors" for i in range(100_000)]


@pytest.mark.timeout(120)  # a hang guard: the quadratic check took hours on these
@pytest.mark.parametrize(
    ("paths", "problem"),
    [
        (HUNDRED_K, None),
        ([*HUNDRED_K, HUNDRED_K[50_000]], "listed twice"),
        ([*HUNDRED_K, "shards/050"], "which is a file"),
        ([*HUNDRED_K, f"{HUNDRED_K[-1]}/inside"], "which is a file"),
    ],
    ids=["accepted", "duplicate", "directory-is-a-file", "file-below-a-file"],
)
def test_100k_entries_are_validated_in_linear_time(paths: list[str], problem: str | None) -> None:
    assert new_paths_problem(paths) == problem


@pytest.mark.timeout(120)  # a hang guard: a scan per lookup took minutes
def test_file_finds_every_entry_of_100k_without_a_scan_each() -> None:
    built = manifest(*HUNDRED_K)
    assert all(built.file(path).path == path for path in HUNDRED_K)
    with pytest.raises(KeyError):
        built.file("absent")


def padded(document: bytes, size: int) -> bytes:
    """`document` with whitespace before its closing brace, to exactly `size` bytes."""
    return document[:-1] + b" " * (size - len(document)) + b"}"


@pytest.mark.parametrize(
    ("parse", "cap", "document"),
    [
        (Manifest.from_json, MANIFEST_MAX_BYTES, manifest("a", "b").to_json()),
        (VersionIndex.from_json, INDEX_MAX_BYTES, VersionIndex().to_json()),
    ],
)
def test_a_document_at_its_cap_parses_and_one_byte_more_is_refused_unparsed(
    parse: Callable[[bytes | str], object], cap: int, document: bytes
) -> None:
    assert parse(padded(document, cap)) == parse(document)
    assert parse(padded(document, cap).decode()) == parse(document)
    with pytest.raises(ValidationError) as caught:
        parse(padded(document, cap + 1))
    assert f"larger than its cap of {cap:,} bytes" in str(caught.value)
    assert caught.value.errors()[0]["type"] == "too_large"
    assert one_line(caught.value) == (
        f"(root): document of {cap + 1:,} bytes is larger than its cap of {cap:,} bytes"
    )


def test_the_manifest_cap_holds_100k_entries_with_long_paths() -> None:
    """What the cap was chosen for: 100,000 files, paths of 150 characters, as publish writes."""
    long = [f"{path}-{'x' * (150 - len(path) - 1)}" for path in HUNDRED_K]
    assert len(long[0]) == 150
    files = [{"path": p, "size": 2**40, "sha256": SHA, "crc64": str(2**64 - 1)} for p in long]
    document = Manifest.model_validate(
        {"version": "v1", "created": NOW.isoformat(), "files": files}
    ).to_json()
    assert len(document) <= MANIFEST_MAX_BYTES
    assert len(Manifest.from_json(document).files) == 100_000


@settings(max_examples=300)
@given(st.binary(max_size=64), st.integers(0, 80))
def test_check_size_refuses_exactly_what_is_over_the_cap(data: bytes, cap: int) -> None:
    if len(data) <= cap:
        assert check_size(data, cap, "Doc") == data
        return
    with pytest.raises(ValidationError) as caught:
        check_size(data, cap, "Doc")
    message = str(caught.value)
    assert f"document of {len(data):,} bytes is larger than its cap of {cap:,} bytes" in message
    if len(data) >= 8 and data not in message.encode():
        assert repr(data)[2:-1] not in message  # never the content
