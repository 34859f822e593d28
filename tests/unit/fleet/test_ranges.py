"""A Range header as the peer server takes it: one range of three forms, clamped to the
blob; anything else a 400 (BadRange), a range past the end a 416 (Unsatisfiable)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache.fleet import BadRange, ByteRange, Unsatisfiable, parse_range


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        ("bytes=0-0", 10, ByteRange(0, 1)),
        ("bytes=2-5", 10, ByteRange(2, 4)),
        ("bytes=2-", 10, ByteRange(2, 8)),
        ("bytes=5-999", 10, ByteRange(5, 5)),
        ("bytes=-3", 10, ByteRange(7, 3)),
        ("bytes=-30", 10, ByteRange(0, 10)),
        (" bytes=9-9 ", 10, ByteRange(9, 1)),
    ],
)
def test_one_range_selects_its_bytes(value: str, size: int, expected: ByteRange) -> None:
    assert parse_range(value, size) == expected


@pytest.mark.parametrize(
    "value",
    [
        "bytes=",
        "bytes=-",
        "bytes=1-2,4-5",
        "bytes=5-2",
        "items=0-1",
        "bytes=+1-2",
        "bytes= 1-2",
        "bytes=\u0661-2",
        "bytes=" + "9" * 19 + "-",
        "0-1",
    ],
)
def test_anything_but_one_range_is_a_bad_range(value: str) -> None:
    with pytest.raises(BadRange):
        parse_range(value, 10)


@pytest.mark.parametrize(("value", "size"), [("bytes=10-", 10), ("bytes=0-0", 0), ("bytes=-0", 10)])
def test_a_range_past_the_end_is_unsatisfiable(value: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(value, size)


@given(
    size=st.integers(1, 10**6),
    first=st.integers(0, 10**6),
    last=st.integers(0, 10**6) | st.none(),
)
def test_a_satisfiable_range_is_inside_the_blob(size: int, first: int, last: int | None) -> None:
    value = f"bytes={first}-{'' if last is None else last}"
    if last is not None and last < first:
        with pytest.raises(BadRange):
            parse_range(value, size)
    elif first >= size:
        with pytest.raises(Unsatisfiable):
            parse_range(value, size)
    else:
        got = parse_range(value, size)
        assert got.start == first
        assert got.length >= 1
        assert got.last == min(size - 1, size - 1 if last is None else last)
