"""Verification that keeps pace with the download instead of following it.

Parts arrive out of order, but within one attempt the bytes of a part are only
ever appended (a retry resumes at the last written byte), so a thread can hash
the file front to back as soon as each byte is written. When the last part lands
only a short tail is left to hash, instead of the whole file: on a fast LAN that
is most of the verify time saved, on a WAN it keeps the link busy to the end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from modelcache.fs._checksum import READ_CHUNK, Digest, StreamHasher


class _Span(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def length(self) -> int: ...


class OrderedHasher:
    """Hashes `fd` in part order; `written(i, n)` says part i's first n bytes are final."""

    def __init__(
        self,
        fd: int,
        parts: Sequence[_Span],
        complete: Iterable[int] = (),
        started: Mapping[int, int] | None = None,
    ) -> None:
        """`complete`: parts already whole on disk; `started`: part -> its first bytes that are."""
        self._fd = fd
        self._parts = list(parts)
        done = set(complete)
        begun = started or {}
        self._written = {
            p.index: (p.length if p.index in done else begun.get(p.index, 0)) for p in self._parts
        }
        self._cond = threading.Condition()
        self._cancelled = False
        self._error: BaseException | None = None
        self._hasher = StreamHasher()
        self._thread = threading.Thread(target=self._run, name="modelcache-verify", daemon=True)
        self._thread.start()

    def written(self, index: int, length: int) -> None:
        with self._cond:
            self._written[index] = length
            self._cond.notify()

    def result(self) -> Digest:
        """The digest once every part is hashed (call after every part is written)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._cancelled:
            raise RuntimeError("the ordered hash was cancelled")
        return self._hasher.digest()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
        self._thread.join()

    def _available(self, index: int, position: int) -> int:
        """Block until part `index` has bytes past `position`; -1 when cancelled."""
        with self._cond:
            while self._written[index] <= position and not self._cancelled:
                self._cond.wait()
            return -1 if self._cancelled else self._written[index]

    def _run(self) -> None:
        buffer = bytearray(READ_CHUNK)
        view = memoryview(buffer)
        try:
            for part in self._parts:
                position = 0
                while position < part.length:
                    available = self._available(part.index, position)
                    if available < 0:
                        return
                    while position < available:
                        want = min(len(buffer), available - position)
                        got = os.preadv(self._fd, [view[:want]], part.start + position)
                        if got <= 0:
                            raise OSError(f"short read at offset {part.start + position}")
                        self._hasher.update(view[:got])
                        position += got
        except BaseException as error:
            self._error = error
