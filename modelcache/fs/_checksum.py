"""The verify path: sha256 and CRC-64/XZ over a stream, in one pass (and, when asked, the
sha256 of each fixed-size piece of it, in the same pass).

CRC-64/XZ is what OSS returns as x-oss-hash-crc64ecma. fastcrc computes it with
SIMD (about 10 GB/s), so sha256 (OpenSSL, SHA-NI) sets the pace; crcmod's
pure-Python fallback would be a hundred times slower and is never used.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

import fastcrc

from modelcache.fs._reading import NotARegularFile, kind_of

READ_CHUNK = 4 * 1024 * 1024


def crc64_xz(data: bytes | bytearray | memoryview, initial: int | None = None) -> int:
    """CRC-64/XZ of `data`, continuing from `initial` (a previous result) when given."""
    if initial is None:
        return int(fastcrc.crc64.xz(data))
    return int(fastcrc.crc64.xz(data, initial=initial))


@dataclass(frozen=True)
class Digest:
    """What a file's content hashes to; `pieces`: the sha256 of each piece, when asked for."""

    size: int
    sha256: str
    crc64: int
    pieces: tuple[str, ...] = ()


class StreamHasher:
    """Feed bytes in order; `digest()` gives size, sha256 and CRC-64/XZ, and with a
    `piece_size` the sha256 of every `piece_size` bytes (the last piece may be shorter)."""

    def __init__(self, piece_size: int | None = None) -> None:
        if piece_size is not None and piece_size < 1:
            raise ValueError(f"a piece size must be at least 1 byte, not {piece_size}")
        self._sha = hashlib.sha256()
        self._crc: int | None = None
        self._size = 0
        self._piece_size = piece_size
        self._piece = hashlib.sha256()
        self._pieces: list[str] = []

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha.update(data)
        self._crc = crc64_xz(data, self._crc)
        if self._piece_size is not None:
            self._update_pieces(memoryview(data).cast("B"))
        self._size += len(data)

    def _update_pieces(self, view: memoryview) -> None:
        """Cut `view` at piece boundaries (it may end some pieces and start others)."""
        assert self._piece_size is not None
        position = self._size
        while view:
            room = self._piece_size - position % self._piece_size
            self._piece.update(view[:room])
            if len(view) >= room:
                self._pieces.append(self._piece.hexdigest())
                self._piece = hashlib.sha256()
            position += min(room, len(view))
            view = view[room:]

    def digest(self) -> Digest:
        crc = self._crc if self._crc is not None else crc64_xz(b"")
        pieces = tuple(self._pieces)
        if self._piece_size is not None and self._size % self._piece_size:
            pieces += (self._piece.hexdigest(),)  # the last, shorter piece
        return Digest(size=self._size, sha256=self._sha.hexdigest(), crc64=crc, pieces=pieces)


def hash_file(
    path: str | os.PathLike[str], *, chunk: int = READ_CHUNK, piece_size: int | None = None
) -> Digest:
    """Hash a whole file, reading into one reused buffer (no per-chunk allocation); with
    `piece_size`, each piece's sha256 too, from the same read (publish reads a file once).

    A FIFO or device put where the file was is refused (NotARegularFile), not read forever."""
    hasher = StreamHasher(piece_size)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFile(f"{path} is {kind_of(mode)}, not a regular file")
    with open(fd, "rb", buffering=0) as handle:
        while True:
            read = handle.readinto(buffer)
            if not read:
                break
            hasher.update(view[:read])
    return hasher.digest()
