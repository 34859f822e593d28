"""Verify-path throughput: modelcache (sha256 + fastcrc CRC-64/XZ) beside crcmod + hashlib.

The baseline is what oss2 itself uses to check x-oss-hash-crc64ecma (crcmod,
with its C extension when built). One thread, one core, file in the page cache
(the disk is not what is measured). Usage: python bench/verify.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import crcmod

from modelcache.fs import READ_CHUNK, crc64_xz, hash_file

# CRC-64/XZ as oss2 defines it (oss2.utils.Crc64).
_CRCMOD_XZ = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)


def read_loop(path: Path, consume: Callable[[memoryview], None]) -> None:
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            consume(view[:read])


def baseline(path: Path) -> tuple[str, int]:
    sha, crc = hashlib.sha256(), 0

    def consume(chunk: memoryview) -> None:
        nonlocal crc
        sha.update(chunk)
        crc = _CRCMOD_XZ(chunk, crc)

    read_loop(path, consume)
    return sha.hexdigest(), crc


def sha_only(path: Path) -> str:
    sha = hashlib.sha256()
    read_loop(path, sha.update)
    return sha.hexdigest()


def fastcrc_only(path: Path) -> int:
    crc: int | None = None

    def consume(chunk: memoryview) -> None:
        nonlocal crc
        crc = crc64_xz(chunk, crc)

    read_loop(path, consume)
    return crc or 0


def crcmod_only(path: Path) -> int:
    crc = 0

    def consume(chunk: memoryview) -> None:
        nonlocal crc
        crc = _CRCMOD_XZ(chunk, crc)

    read_loop(path, consume)
    return crc


def best_rate(size: int, run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return size / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelcache-bench-") as tmp:
        path = Path(tmp) / "weights.bin"
        with path.open("wb") as handle:
            for _ in range(args.mib):
                handle.write(os.urandom(1024 * 1024))
        size = path.stat().st_size
        sha_only(path)  # page cache warm-up

        ours = hash_file(path)
        theirs = baseline(path)
        assert (ours.sha256, ours.crc64) == theirs, "modelcache and the baseline disagree"

        rows = [
            ("modelcache verify (sha256 + fastcrc)", lambda: hash_file(path)),
            ("baseline: crcmod + hashlib (as oss2)", lambda: baseline(path)),
            ("  sha256 alone (hashlib/OpenSSL)", lambda: sha_only(path)),
            ("  CRC-64/XZ alone, fastcrc", lambda: fastcrc_only(path)),
            ("  CRC-64/XZ alone, crcmod", lambda: crcmod_only(path)),
        ]
        print(f"verify benchmark: {size / 2**20:.0f} MiB in page cache, one thread")
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"python {platform.python_version()}"
        )
        results = {name: best_rate(size, run, args.repeats) for name, run in rows}
        for name, rate in results.items():
            print(f"{name:40} {rate:7.2f} GB/s")
        speedup = results[rows[0][0]] / results[rows[1][0]]
        print(f"modelcache / baseline: {speedup:.1f}x")


if __name__ == "__main__":
    main()
