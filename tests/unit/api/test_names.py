"""Names that become paths can never escape their directory."""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelcache.api.manifest import Manifest
from modelcache.api.names import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    InvalidName,
    check_model_name,
    check_relative_path,
    check_version,
    parse_model_ref,
)
from modelcache.store import StoreError
from modelcache.store.layout import check_sha256


@pytest.mark.parametrize("good", ["v1", "v2.3.1", "2024-11-24", "v1.0.0+build.7", "rc_1"])
def test_good_versions(good: str) -> None:
    assert check_version(good) == good


@pytest.mark.parametrize(
    "bad", ["", "..", "v1/..", "a/b", "../v1", ".hidden", "-v1", "v..1", "v 1"]
)
def test_bad_versions_are_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(InvalidName, match="invalid version"):
        check_version(bad)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("../x", r"'\.\.'"),
        ("a/../../x", r"'\.\.'"),
        ("a//b", "empty segments"),
        ("./a", r"'\.'"),
        ("a\\b", "backslash"),
        ("manifest.json", "reserved"),
        ("", "empty"),
    ],
)
def test_bad_file_paths_name_the_problem(bad: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason):
        check_relative_path(bad)


segment = st.text(
    alphabet=st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
)


@given(st.lists(st.one_of(segment, st.sampled_from(["..", ".", ""])), min_size=1, max_size=6))
def test_an_accepted_path_stays_inside_its_directory(parts: list[str]) -> None:
    path = "/".join(parts)
    try:
        check_relative_path(path)
    except InvalidName:
        return
    joined = posixpath.normpath(posixpath.join("/root/versions/v1", path))
    assert joined.startswith("/root/versions/v1/")


def test_model_refs() -> None:
    assert parse_model_ref("sdxl-lora") == ("default", "sdxl-lora")
    assert parse_model_ref("studio/sdxl-lora") == ("studio", "sdxl-lora")
    with pytest.raises(InvalidName, match="invalid model name"):
        parse_model_ref("studio/../etc")
    with pytest.raises(InvalidName, match="invalid namespace"):
        parse_model_ref("Studio/lora")


CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.just("\x7f")


@given(name=st.sampled_from(["v1", "lora", "studio"]), control=CONTROL, where=st.booleans())
def test_a_name_with_a_control_character_is_refused_in_full(
    name: str, control: str, where: bool
) -> None:
    """ "v1\\n" would create a directory that `ls` shows like the real one: every name is
    checked in full, not up to a trailing newline."""
    bad = f"{name}{control}" if where else f"{control}{name}"
    for check in (
        check_version,
        lambda n: check_model_name("studio", n),
        lambda n: check_model_name(n, "lora"),
        check_relative_path,
    ):
        with pytest.raises(InvalidName):
            check(bad)
    with pytest.raises(StoreError):
        check_sha256("a" * 64 + "\n")


NAME_MAX = 255


@pytest.mark.parametrize(
    "path",
    [
        "a" * (NAME_MAX + 1),  # the raw Errno 36 case: one name over NAME_MAX
        "unet/" + "w" * 300 + ".safetensors",
        "é" * 128,  # 128 characters, 256 bytes: the limit is in bytes
        "x" * (MAX_SEGMENT_BYTES + 1),  # fits NAME_MAX, not with a temporary suffix
    ],
)
def test_a_name_too_long_for_the_file_system_is_refused_with_the_limit(path: str) -> None:
    with pytest.raises(InvalidName, match=rf"at most {MAX_SEGMENT_BYTES} per name") as refused:
        check_relative_path(path)
    assert len(str(refused.value)) < 300, "the refused name is quoted cut short"


def test_a_path_too_long_in_bytes_is_refused() -> None:
    deep = "/".join(["é" * 50] * 11)  # 561 characters, 1110 bytes
    with pytest.raises(InvalidName, match=f"longer than {MAX_PATH_BYTES} bytes"):
        check_relative_path(deep)
    with pytest.raises(InvalidName, match="longer than"):
        check_relative_path("a/" * 1_000_000 + "b")


def test_names_at_the_limits_are_accepted() -> None:
    check_relative_path("w" * MAX_SEGMENT_BYTES)
    check_relative_path("/".join(["d" * 99] * 10) + "/" + "f" * 23)  # 1013 bytes


def test_a_version_over_name_max_is_refused_by_the_version_rule() -> None:
    with pytest.raises(InvalidName, match="use 1-128") as refused:
        check_version("v" * 300)
    assert len(str(refused.value)) < 300


def test_an_undecodable_name_is_refused() -> None:
    with pytest.raises(InvalidName, match="not valid UTF-8"):
        check_relative_path("weights/\udcff.bin")


def test_a_manifest_naming_a_file_too_long_is_refused_when_parsed() -> None:
    document = {
        "version": "v1",
        "created": "2026-11-24T00:00:00+00:00",
        "files": [{"path": "n" * 256, "size": 1, "sha256": "a" * 64, "crc64": "1"}],
    }
    with pytest.raises(ValidationError, match=f"at most {MAX_SEGMENT_BYTES} per name"):
        Manifest.model_validate(document)


NAME_CHARACTER = st.characters(blacklist_characters="/\\", blacklist_categories=("Cs", "Cc"))
NAME = st.one_of(
    st.text(alphabet=NAME_CHARACTER, min_size=1, max_size=20),
    # long names, ASCII or not, around the limits: many bytes per character
    st.builds(lambda c, n: c * n, NAME_CHARACTER, st.integers(min_value=60, max_value=300)),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(NAME, min_size=1, max_size=8))
def test_every_accepted_path_can_be_created_under_a_deep_store(parts: list[str]) -> None:
    """Whatever a manifest names, once accepted, is created on a real file system under the
    deepest store directory there is, with the longest temporary name derived from it."""
    path = "/".join(parts)
    try:
        check_relative_path(path)
    except InvalidName:
        return
    with tempfile.TemporaryDirectory() as temporary:
        # models/<namespace: 63>/<name: 253>/versions/.staging-<version: 128>-<token>
        staging = Path(temporary, "models", "n" * 63, "m" * 253, "versions")
        staging = staging / f".staging-{'v' * 128}-01234567"
        dest = staging / path
        dest.parent.mkdir(parents=True)
        dest.write_bytes(b"")
        os.link(dest, dest.with_name(f".{dest.name}.0123456789ab.claim"))
        os.link(dest, dest.with_name(f".{dest.name}.link-01234567"))
