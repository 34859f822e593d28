"""Names that become paths can never escape their directory."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache.api.names import (
    InvalidName,
    check_model_name,
    check_relative_path,
    check_version,
    parse_model_ref,
)
from modelcache.store.errors import StoreError
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
