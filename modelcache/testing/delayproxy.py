"""A TCP delay line: forwards to a target, holding each chunk for `delay` seconds each way.

This kernel has no netem, so WAN latency for benchmarks is added here, in user
space. What it emulates: every request pays the round trip (a new connection
one RTT for its handshake, then RTT/2 out and RTT/2 back), as on the case's
45 ms leased line; order is preserved and throughput is not capped. What it does
not: TCP's window dynamics over a long path (slow start, loss recovery at
BDP scale), because each side's TCP sees only a short, local hop.

Run as its own process so its event loop never competes with the measured
client for the GIL: `python -m modelcache.testing.delayproxy --listen
127.0.0.1:PORT --target HOST:PORT --delay-ms 22.5`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from modelcache.testing.ports import LOOPBACK, free_port, is_listening, wait_until
from modelcache.testing.process import ManagedProcess

READ_SIZE = 256 * 1024
BUFFER_LIMIT = 8 * 1024 * 1024
"""Bytes held per direction per connection before the proxy stops reading: far above the
bandwidth-delay product of the links benchmarked (100 Mbit/s x 45 ms = 0.56 MB)."""


@dataclass
class Tally:
    """Bytes the line carried: `down` from the target to clients, `up` the other way. Its
    file (`--stats`) is the link's byte counter that tests and benchmarks read."""

    down: int = 0
    up: int = 0

    def write(self, path: Path) -> None:
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(json.dumps({"down": self.down, "up": self.up}))
        os.replace(temp, path)

    @classmethod
    def read(cls, path: Path) -> Tally:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        return cls(int(raw["down"]), int(raw["up"]))


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    count: Callable[[int], None] = lambda n: None,
) -> None:
    """Copy reader -> writer, each chunk delivered `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    buffered = 0
    room = asyncio.Event()
    room.set()

    async def deliver() -> None:
        nonlocal buffered
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                count(len(data))
                buffered -= len(data)
                if buffered <= BUFFER_LIMIT:
                    room.set()
            if writer.can_write_eof():
                writer.write_eof()
        finally:
            room.set()  # never leave the reader waiting on a dead writer

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(READ_SIZE):
            queue.put_nowait((loop.time() + delay, data))
            buffered += len(data)
            if buffered > BUFFER_LIMIT:
                room.clear()
                await room.wait()
            if delivering.done():
                delivering.result()  # the far side failed: raise its error
                return
        queue.put_nowait(None)
        await delivering
    finally:
        delivering.cancel()


async def _serve_connection(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
    tally: Tally,
) -> None:
    """One client connection: one RTT for the emulated handshake, then two delayed pumps."""
    upstream_writer: asyncio.StreamWriter | None = None
    try:
        await asyncio.sleep(2 * delay)
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        await asyncio.gather(
            _pump(client_reader, upstream_writer, delay, lambda n: _add(tally, up=n)),
            _pump(upstream_reader, client_writer, delay, lambda n: _add(tally, down=n)),
        )
    except (OSError, asyncio.IncompleteReadError):
        pass  # a reset on either side ends the connection, as it would on the wire
    finally:
        for writer in (client_writer, upstream_writer):
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def _add(tally: Tally, *, up: int = 0, down: int = 0) -> None:
    tally.up += up
    tally.down += down


async def serve(
    listen: tuple[str, int], target: tuple[str, int], delay: float, stats: Path | None = None
) -> None:
    """Serve until cancelled or SIGTERM/SIGINT; with `stats`, write the tally there every
    0.1 s and at the end."""
    tally = Tally()
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(r, w, target, delay, tally), *listen, backlog=512
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        while not stop.is_set():
            if stats is not None:
                tally.write(stats)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    if stats is not None:
        tally.write(stats)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT to accept on")
    parser.add_argument("--target", type=_address, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay (RTT/2)")
    parser.add_argument("--stats", type=Path, help="a file to keep the bytes carried in")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.target, args.delay_ms / 1000, args.stats))


class DelayProxy:
    """The delay line as a child process we own, stopped by PID; `endpoint` is its HTTP URL."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        rtt_ms: float,
        log_path: Path,
        host: str = LOOPBACK,
        stats_path: Path | None = None,
    ) -> None:
        self.target = target
        self.stats_path = stats_path
        self.rtt_ms = rtt_ms
        self.host = host
        self.port = free_port()
        self.process = ManagedProcess(
            "delayproxy",
            [
                sys.executable,
                "-m",
                "modelcache.testing.delayproxy",
                f"--listen={host}:{self.port}",
                f"--target={target[0]}:{target[1]}",
                f"--delay-ms={rtt_ms / 2}",
                *([f"--stats={stats_path}"] if stats_path is not None else []),
            ],
            log_path=log_path,
            stop_grace=5.0,
        )

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def tally(self) -> Tally:
        """The bytes the line has carried so far (within 0.1 s; exact once stopped)."""
        if self.stats_path is None:
            raise RuntimeError("this delay line was started without a stats file")
        return Tally.read(self.stats_path)

    def start(self) -> DelayProxy:
        self.process.start()
        try:
            wait_until(
                lambda: is_listening(self.port, self.host),
                timeout=20,
                what="delay proxy",
                alive=self.process.exit_reason,
            )
        except BaseException:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
