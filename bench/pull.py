"""L3 pull goodput over a shaped link: modelcache beside oss2's resumable and single GET.

SeaweedFS runs in a network namespace behind a veth pair shaped with `tc htb`
(both directions, default 100 Mbit/s, the case's leased line); a user-space
delay line on the host adds the round trip (default 45 ms) to every request.
One file (default 256 MiB of random bytes) is uploaded unshaped, then pulled
three times in one run, each cold into a fresh directory, and checked by sha256:
  1. modelcache: sources.download.download_file (ranged, parallel, verified)
  2. oss2.resumable_download with its defaults
  3. one oss2 get_object_to_file
Goodput = file bytes / wall time, as a fraction of the shaped rate. Needs root.
Usage: sudo .venv/bin/python bench/pull.py [--mib 256] [--rate-mbit 100] [--rtt-ms 45]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import oss2
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from modelcache.api.manifest import ManifestFile
from modelcache.fs import hash_file
from modelcache.testing import ObjectStore
from modelcache.testing.delayproxy import DelayProxy
from modelcache.testing.netns import ShapedLink, ShapedLinkUnavailable

BUCKET = "bench"
PREFIX = "pull"
FILE_NAME = "weights.bin"
MIB = 1024 * 1024
MTU = 1500
# TCP payload per Ethernet frame as htb counts it (IP 20 + TCP 20 + timestamps 12; L2 header 14).
TCP_CEILING = (MTU - 52) / (MTU + 14)

console = Console(highlight=False)


@dataclass
class Result:
    method: str
    seconds: float | None = None
    ok: bool = False
    error: str = ""


def machine() -> str:
    """Cores and CPU model: the pull is link-bound, but a reader should know the client."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores, {model}, Linux {platform.release()}, "
        f"python {platform.python_version()}"
    )


def write_random(path: Path, mib: int) -> None:
    with path.open("wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(MIB))


@contextlib.contextmanager
def link_progress(progress: Progress, link: ShapedLink, label: str, size: int) -> Iterator[None]:
    """A bar fed from the veth's rx counter: the same for every method, and costs them nothing."""
    task = progress.add_task(label, total=size)
    start = link.counters().rx_bytes
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.25):
            done = link.counters().rx_bytes - start
            progress.update(task, completed=min(done, size))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()
        progress.update(task, completed=size)


def pull_modelcache(
    endpoint: str, dest: Path, expected: ManifestFile, concurrency: int, part_size: int
) -> None:
    from modelcache.sources import PullOptions, download_file, open_source  # noqa: PLC0415

    os.environ["OSS_ENDPOINT"] = endpoint
    client = open_source(f"oss://{BUCKET}/{PREFIX}")
    options = PullOptions(concurrency=concurrency, part_size=part_size)
    download_file(client, FILE_NAME, expected, dest, options=options)


def pull_oss2_resumable(endpoint: str, dest: Path) -> None:
    bucket = oss2.Bucket(oss2.AnonymousAuth(), endpoint, BUCKET)
    # Only the checkpoint directory differs from the defaults: keep it out of $HOME.
    store = oss2.ResumableDownloadStore(root=str(dest.parent))
    oss2.resumable_download(bucket, f"{PREFIX}/{FILE_NAME}", str(dest), store=store)


def pull_oss2_single(endpoint: str, dest: Path) -> None:
    bucket = oss2.Bucket(oss2.AnonymousAuth(), endpoint, BUCKET)
    bucket.get_object_to_file(f"{PREFIX}/{FILE_NAME}", str(dest))


def measure(
    name: str,
    run: Callable[[Path], None],
    *,
    work: Path,
    expected: ManifestFile,
    link: ShapedLink,
    progress: Progress,
) -> Result:
    """Time one cold pull into a fresh directory, then check its bytes outside the timing."""
    result = Result(name)
    target_dir = Path(tempfile.mkdtemp(prefix="pull-", dir=work))
    dest = target_dir / FILE_NAME
    try:
        with link_progress(progress, link, name, expected.size):
            started = time.perf_counter()
            run(dest)
            result.seconds = time.perf_counter() - started
        digest = hash_file(dest)
        result.ok = digest.size == expected.size and digest.sha256 == expected.sha256
        if not result.ok:
            result.error = f"wrong bytes: {digest.size} bytes, sha256 {digest.sha256[:16]}..."
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(target_dir, ignore_errors=True)
    return result


def report(results: list[Result], size: int, link_rate: float) -> None:
    print()
    print(f"{'method':42} {'seconds':>8} {'MB/s':>7} {'goodput':>8}  sha256")
    for r in results:
        if r.seconds is None:
            print(f"{r.method:42} {'-':>8} {'-':>7} {'-':>8}  FAILED: {r.error}")
            continue
        rate = size / r.seconds
        check = "ok" if r.ok else f"FAILED: {r.error}"
        print(f"{r.method:42} {r.seconds:8.2f} {rate / 1e6:7.2f} {rate / link_rate:8.1%}  {check}")
    timed = [r.seconds if r.ok else None for r in results]
    if len(timed) >= 2 and timed[0] and timed[1]:
        ours, theirs = timed[0], timed[1]
        print(
            f"modelcache vs oss2.resumable_download: {theirs / ours:.3f}x "
            f"({'faster' if ours < theirs else 'NOT faster'})"
        )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--rate-mbit", type=float, default=100.0, help="link rate (default 100)")
    parser.add_argument(
        "--rtt-ms", type=float, default=45.0, help="emulated round trip, 0 for none (default 45)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="modelcache's parallel ranges")
    parser.add_argument("--part-size-mib", type=float, default=8.0, help="modelcache's range size")
    parser.add_argument(
        "--keep-going", action="store_true", help="report a failed method and go on to the next"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    part_size = int(args.part_size_mib * MIB)
    link_rate = args.rate_mbit * 1e6 / 8

    try:
        results, size = run(args, part_size)
    except ShapedLinkUnavailable as exc:
        raise SystemExit(f"bench/pull.py: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted; namespace, servers and temp files were cleaned up") from None

    print()
    print(f"pull benchmark: {size / MIB:.0f} MiB file, one run, each method cold")
    print(
        f"link: {args.rate_mbit:g} Mbit/s ({link_rate / 1e6:.2f} MB/s), tc htb on a veth pair, "
        f"both directions; TCP payload ceiling at MTU {MTU}: {TCP_CEILING:.1%}"
    )
    if args.rtt_ms > 0:
        print(
            f"rtt: {args.rtt_ms:g} ms by a user-space delay line: every request pays it and each "
            "new connection one more; TCP window dynamics over a long path are NOT emulated"
        )
    else:
        print("rtt: none added (veth round trip, well under 1 ms)")
    print(f"machine: {machine()}")
    print(
        f"modelcache: concurrency {args.concurrency}, part size {part_size / MIB:g} MiB; "
        f"oss2: defaults (threshold {oss2.defaults.multiget_threshold / MIB:g} MiB, "
        f"{oss2.defaults.multiget_num_threads} threads, "
        f"part {oss2.defaults.multiget_part_size / MIB:g} MiB)"
    )
    report(results, size, link_rate)
    if not all(r.ok for r in results):
        raise SystemExit(1)


def run(args: argparse.Namespace, part_size: int) -> tuple[list[Result], int]:
    """Set up link, store and file; pull three ways. Every resource is released on the way out."""
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelcache-pull-")))
        console.print(f"[bold]setup[/]: namespace + veth, SeaweedFS, {args.mib} MiB file")
        link = stack.enter_context(ShapedLink(args.rate_mbit, shaped=False))
        store = stack.enter_context(
            ObjectStore(
                host=link.ns_address, command_prefix=link.exec_prefix, work_dir=work / "weed"
            )
        )
        source = work / "source.bin"
        write_random(source, args.mib)
        digest = hash_file(source)
        expected = ManifestFile(
            path=FILE_NAME, size=digest.size, sha256=digest.sha256, crc64=str(digest.crc64)
        )
        store.create_bucket(BUCKET)
        store.s3_client().upload_file(str(source), BUCKET, f"{PREFIX}/{FILE_NAME}")
        source.unlink()
        link.shape()
        endpoint = store.endpoint
        if args.rtt_ms > 0:
            proxy = DelayProxy(
                (link.ns_address, store.port), rtt_ms=args.rtt_ms, log_path=work / "proxy.log"
            )
            endpoint = stack.enter_context(proxy).endpoint
        console.print(
            f"[bold]pulling[/] over {args.rate_mbit:g} Mbit/s, rtt {args.rtt_ms:g} ms "
            f"(server {link.ns_address} in namespace {link.name}, client via {endpoint})"
        )
        methods: list[tuple[str, Callable[[Path], None]]] = [
            (
                f"modelcache download_file (c={args.concurrency})",
                lambda dest: pull_modelcache(endpoint, dest, expected, args.concurrency, part_size),
            ),
            (
                "oss2.resumable_download (defaults)",
                lambda dest: pull_oss2_resumable(endpoint, dest),
            ),
            ("oss2 get_object_to_file (one GET)", lambda dest: pull_oss2_single(endpoint, dest)),
        ]
        results: list[Result] = []
        columns = (
            TextColumn("{task.description:36}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, refresh_per_second=4) as progress:
            for name, method in methods:
                result = measure(
                    name, method, work=work, expected=expected, link=link, progress=progress
                )
                results.append(result)
                if result.error and not args.keep_going:
                    progress.stop()
                    report(results, expected.size, link.rate_bytes_per_s)
                    raise SystemExit(f"{name} failed: {result.error} (--keep-going to go on)")
        return results, expected.size
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


if __name__ == "__main__":
    main()
