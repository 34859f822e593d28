"""The resume record of a partial download: which parts of one object version are on disk.

A record beside the partial file (`<dest>.resume.json`) claims finished parts, and how far
parts in flight got, but only after an fsync of the data (`Journal`): a SIGKILL at any
instant leaves a record that never claims bytes the disk may not hold. A record is read
within its cap and parsed strictly; one that cannot be trusted is reported, not used.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelcache.fs import FileRefused, read_capped, write_atomic

log = logging.getLogger(__name__)

MiB = 1024 * 1024
RESUME_SUFFIX = ".resume.json"
RECORD_VERSION = 1
FLUSH_INTERVAL = 0.5
"""Seconds between durable claims: at most this much finished work is redone after a crash."""
FLUSH_BYTES = 256 * MiB
"""...or this many finished bytes, whichever comes first (bounds redo work on fast links)."""
MAX_RECORD_BYTES = 16 * MiB
"""A resume record's cap, checked before it is parsed. A record is a key, an ETag and about
9 bytes per finished part (an index in `done`; parts in flight add a few per worker): 16 MiB
holds some 1.8 million parts, a 14 TB file at the default 8 MiB parts, 110 GB at the
smallest a config allows (64 KiB). A record that would outgrow it is not rewritten: the last
one written stays, claiming less than the disk holds, never more."""


@dataclass(frozen=True)
class Part:
    """Bytes [start, end) of the object."""

    index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def part_count(size: int, part_size: int) -> int:
    return -(-size // part_size)


def plan_parts(size: int, part_size: int) -> list[Part]:
    """Cut [0, size) into consecutive parts of `part_size` (the last one shorter)."""
    if size < 0 or part_size < 1:
        raise ValueError(f"cannot plan parts of {part_size} bytes for a size of {size}")
    return [
        Part(index, start, min(start + part_size, size))
        for index, start in enumerate(range(0, size, part_size))
    ]


@dataclass(frozen=True)
class ResumeRecord:
    """What a partial file holds durably: the parts of one object version that are on disk,
    and of the parts in progress, how many of their first bytes (`partial`)."""

    key: str
    etag: str
    size: int
    part_size: int
    done: frozenset[int] = field(default_factory=frozenset)
    partial: tuple[tuple[int, int], ...] = ()  # (part index, bytes on disk from its start)

    def started(self) -> dict[int, int]:
        return dict(self.partial)

    def matches(self, key: str, etag: str, size: int, part_size: int) -> bool:
        return (self.key, self.etag, self.size, self.part_size) == (key, etag, size, part_size)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": RECORD_VERSION,
                "key": self.key,
                "etag": self.etag,
                "size": self.size,
                "part_size": self.part_size,
                "done": sorted(self.done),
                "partial": {str(i): n for i, n in self.partial},
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ResumeRecord:
        """Parse a record; ValueError for anything that is not exactly what `to_json` writes."""
        try:
            raw = json.loads(data)
        except RecursionError:
            raise ValueError("resume record is nested too deeply") from None
        if not isinstance(raw, dict):
            raise ValueError("resume record is not a JSON object")
        if type(raw.get("version")) is not int or raw["version"] != RECORD_VERSION:
            raise ValueError(f"unknown resume record version {_quoted(raw.get('version'))}")
        key, etag = _field(raw, "key", str), _field(raw, "etag", str)
        size, part_size = _field(raw, "size", int), _field(raw, "part_size", int)
        done = _field(raw, "done", list)
        if size < 0 or part_size < 1:
            raise ValueError(f"resume record has size {size} and part size {part_size}")
        parts = part_count(size, part_size)
        if not all(type(i) is int and 0 <= i < parts for i in done):
            raise ValueError(f"resume record claims parts outside 0..{parts - 1}")
        if len(set(done)) != len(done):
            raise ValueError("resume record claims a part twice")
        partial = raw.get("partial", {})
        if type(partial) is not dict:
            raise ValueError("resume record field 'partial' is not an object")
        started: list[tuple[int, int]] = []
        for index_text, length in partial.items():
            if not (index_text.isascii() and index_text.isdigit()) or type(length) is not int:
                raise ValueError(f"resume record has a bad partial entry {_quoted(index_text)}")
            index = int(index_text)
            span = min(part_size, size - index * part_size)
            if not 0 <= index < parts or index in done or not 0 < length < span:
                raise ValueError(f"resume record claims {length} bytes of part {index}")
            started.append((index, length))
        return cls(key, etag, size, part_size, frozenset(done), tuple(sorted(started)))


def _field(raw: dict[str, Any], name: str, kind: type) -> Any:
    value = raw.get(name)
    if type(value) is not kind:  # bool is an int subclass: reject it by exact type
        raise ValueError(f"resume record field {name!r} is missing or not a {kind.__name__}")
    return value


def _quoted(value: object, limit: int = 40) -> str:
    """A value of a record in an error message, cut short: a record may be any bytes."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resume_path(dest: Path) -> Path:
    """Where the resume record of a partial file lives."""
    return dest.with_name(dest.name + RESUME_SUFFIX)


def load_record(path: Path) -> ResumeRecord | None:
    """The record at `path`, or None when there is none or it cannot be trusted."""
    return read_record(path)[0]


def read_record(path: Path) -> tuple[ResumeRecord | None, str | None]:
    """The record at `path` and, when one is there but not trusted, why. Bounded and never
    blocking: a FIFO, a directory or a device there is a record that cannot be trusted."""
    try:
        data = read_capped(path, MAX_RECORD_BYTES, what="resume record")
        return ResumeRecord.from_json(data), None
    except FileNotFoundError:
        return None, None
    except FileRefused as error:  # a special file, or past its cap: the message names it
        problem = str(error)
    except OSError as error:
        problem = f"resume record {path} cannot be read: {error.strerror}"
    except ValueError as error:  # JSON, UTF-8 and field errors alike
        problem = f"resume record {path} is not valid: {error}"
    return None, problem


class Journal:
    """Claims finished parts in the resume record, never before their bytes are fsynced."""

    def __init__(
        self,
        fd: int,
        path: Path,
        record: ResumeRecord,
        *,
        interval: float = FLUSH_INTERVAL,
        max_bytes: int = FLUSH_BYTES,
    ) -> None:
        self._fd = fd
        self._path = path
        self._record = record
        self._interval = interval
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._progress: dict[int, int] = record.started()  # parts in flight: bytes written
        self._pending_bytes = 0
        self._last = time.monotonic()
        self._outgrown = False  # the record passed MAX_RECORD_BYTES: not rewritten since

    def progressed(self, part: Part, written: int, nbytes: int) -> None:
        """Part `part` has `written` bytes from its start on disk (not yet fsynced)."""
        with self._lock:
            if written < part.length:  # a whole part is claimed by `finished`, in one go
                self._progress[part.index] = written
            else:
                self._progress.pop(part.index, None)
            self._pending_bytes += nbytes
            self._maybe_flush()

    def finished(self, part: Part) -> None:
        with self._lock:
            self._pending.add(part.index)
            self._progress.pop(part.index, None)
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last >= self._interval
        if due or self._pending_bytes >= self._max_bytes:
            self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        self._last = time.monotonic()
        started = tuple(sorted((i, n) for i, n in self._progress.items() if n > 0))
        if not self._pending and started == self._record.partial:
            return
        os.fsync(self._fd)  # the data first: the record may only claim what is on disk
        done = self._record.done | self._pending
        started = tuple((i, n) for i, n in started if i not in done)
        self._record = replace(self._record, done=done, partial=started)
        encoded = self._record.to_json()
        if len(encoded) <= MAX_RECORD_BYTES:
            write_atomic(self._path, encoded)
        elif not self._outgrown:  # the last record written stays: it claims less, never more
            self._outgrown = True
            log.warning(
                "the resume record %s would pass its cap of %d bytes: it is no longer updated",
                self._path,
                MAX_RECORD_BYTES,
            )
        self._pending.clear()
        self._pending_bytes = 0
