"""Hashing while parts arrive in any order gives the digest of the finished file."""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.fs import OrderedHasher, crc64_xz


@dataclass(frozen=True)
class Span:
    index: int
    start: int
    length: int


def spans(size: int, part: int) -> list[Span]:
    return [Span(i, start, min(part, size - start)) for i, start in enumerate(range(0, size, part))]


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=40_000),
    part=st.integers(1, 9_000),
    chunk=st.integers(1, 5_000),
    seed=st.integers(0, 2**32 - 1),
    resumed_share=st.floats(0, 1),
)
def test_any_arrival_order_hashes_the_whole_file(
    data: bytes, part: int, chunk: int, seed: int, resumed_share: float
) -> None:
    rng = random.Random(seed)  # noqa: S311 - test ordering, not secrets
    parts = spans(len(data), part)
    resumed = {p.index for p in parts if rng.random() < resumed_share}
    with tempfile.TemporaryFile() as handle:
        fd = handle.fileno()
        os.ftruncate(fd, len(data))
        for p in parts:
            if p.index in resumed:
                os.pwrite(fd, data[p.start : p.start + p.length], p.start)
        hasher = OrderedHasher(fd, parts, complete=resumed)
        pending = [p for p in parts if p.index not in resumed]
        rng.shuffle(pending)

        def write(p: Span) -> None:
            for offset in range(0, p.length, chunk):
                piece = data[p.start + offset : p.start + min(offset + chunk, p.length)]
                os.pwrite(fd, piece, p.start + offset)
                hasher.written(p.index, offset + len(piece))

        threads = [threading.Thread(target=write, args=(p,)) for p in pending]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        digest = hasher.result()
    assert digest.size == len(data)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.crc64 == crc64_xz(data)


def test_cancel_stops_a_hasher_waiting_for_bytes_that_never_come() -> None:
    with tempfile.TemporaryFile() as handle:
        os.ftruncate(handle.fileno(), 100)
        hasher = OrderedHasher(handle.fileno(), spans(100, 10))
        hasher.written(0, 10)
        hasher.cancel()
        with pytest.raises(RuntimeError, match="cancelled"):
            hasher.result()
