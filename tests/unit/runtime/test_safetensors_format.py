"""The safetensors header parser reads untrusted bytes: whatever they are, it returns a
header or refuses with its one error (SwapRefused), reads no more than it must, and
accepts only shapes and offsets that are non-negative integers."""

from __future__ import annotations

import io
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.runtime.errors import SwapRefused
from modelcache.runtime.safetensors_format import DTYPES, MAX_HEADER_BYTES, read_header
from tests.strategies import json_scalars, json_values


def framed(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def parse(blob: bytes) -> object:
    try:
        return read_header(io.BytesIO(blob), len(blob), where="adapter.safetensors")
    except SwapRefused:
        return None


json_documents = json_values(st.text(max_size=6))
entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from([*DTYPES, "F128", "", "f32"]) | json_scalars,
        "shape": st.lists(json_scalars, max_size=4) | json_documents,
        "data_offsets": st.lists(json_scalars, min_size=0, max_size=3) | json_documents,
    }
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_a_header_or_a_refusal(blob: bytes) -> None:
    parse(blob)
    parse(framed(blob))


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.text(max_size=10), entries | json_documents, max_size=5),
    st.binary(max_size=64),
)
def test_crafted_headers_are_a_header_or_a_refusal(header: dict[str, object], data: bytes) -> None:
    header_bytes = json.dumps(header).encode()
    parsed = parse(framed(header_bytes, data))
    if parsed is not None:
        for entry in parsed.tensors.values():  # type: ignore[attr-defined]
            assert all(type(d) is int and d >= 0 for d in entry.shape)


@pytest.mark.parametrize(
    "header",
    [
        b"[" * 200_000 + b"]" * 200_000,  # nesting deeper than the JSON parser's stack
        b'{"a": ' + b"9" * 50_000 + b"}",  # an integer too long to convert
        b'{"a": {"dtype": "F32", "shape": [true, 2], "data_offsets": [0, 8]}}',  # a bool dim
        b'{"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}',
        b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [false, 8]}}',
        b"\xff\xfe not utf-8",
    ],
)
def test_hostile_headers_are_refused_cleanly(header: bytes) -> None:
    assert parse(framed(header, b"\0" * 8)) is None


class Bottomless(io.RawIOBase):
    """A file claiming a huge header: anything read past the 8-byte length is a failure."""

    def __init__(self, length: int) -> None:
        self.prefix = struct.pack("<Q", length)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        if self.position >= 8:
            raise AssertionError("read past the length of a header it must refuse")
        chunk = self.prefix[self.position : self.position + size]
        self.position += len(chunk)
        return chunk


def test_an_oversized_header_is_refused_before_it_is_read() -> None:
    length = MAX_HEADER_BYTES + 1
    with pytest.raises(SwapRefused, match="does not fit"):
        read_header(Bottomless(length), 8 + length + 10, where="adapter.safetensors")  # type: ignore[arg-type]
