"""One byte range of a `Range` header (RFC 9110 14.1), as a peer asks for part of a blob."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


class BadRange(ValueError):  # noqa: N818 - reads as what happened
    """Not one `bytes=a-b`, `bytes=a-` or `bytes=-n` range: a 400."""


class Unsatisfiable(ValueError):  # noqa: N818
    """A well-formed range that selects no byte of the blob: a 416."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    length: int

    @property
    def last(self) -> int:
        return self.start + self.length - 1


def parse_range(value: str, size: int) -> ByteRange:
    """The bytes of a `size`-byte blob that `value` selects (the end clamped to the blob's);
    BadRange for anything but one range of the three forms, Unsatisfiable for a range
    past the end (or any of an empty blob)."""
    found = _RANGE.fullmatch(value.strip(" \t"))
    if found is None:
        raise BadRange(f"bad Range {value[:60]!r}: one range, bytes=first-last")
    first, last = found[1], found[2]
    if not first and not last:
        raise BadRange(f"bad Range {value[:60]!r}: one range, bytes=first-last")
    if not first:  # the last n bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable(f"no byte of a {size}-byte blob is its last {suffix}")
        return ByteRange(max(0, size - suffix), min(suffix, size))
    start = int(first)
    if last and int(last) < start:
        raise BadRange(f"bad Range {value[:60]!r}: its last byte is before its first")
    if start >= size:
        raise Unsatisfiable(f"byte {start} is past the end of a {size}-byte blob")
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end - start + 1)
