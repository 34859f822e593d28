"""Shared pieces of the cluster benchmarks (bench/rollback.py, bench/scale.py).

Both start a real kube-apiserver + etcd, install the CRDs, create many Node
objects and run modelcache processes against them; every process is stopped by
PID and every object deleted on the way out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from urllib3.exceptions import HTTPError

from modelcache.api.k8s import GROUP, NODE_CACHES, VERSION
from modelcache.operator import handlers
from modelcache.testing.process import ManagedProcess

REPO = Path(__file__).resolve().parents[1]
console = Console(highlight=False, soft_wrap=True)


# -- the machine -----------------------------------------------------------------------------
def machine() -> str:
    """Cores, CPU model and memory: cluster figures mean little without the box they ran on."""
    model = platform.processor() or platform.machine()
    memory = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    return (
        f"{os.cpu_count()} cores, {model}{memory}, Linux {platform.release()}, "
        f"python {platform.python_version()}"
    )


def load_average() -> str:
    """The 1-minute load before a run: the box is shared, so say how busy it was."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"


# -- process memory and CPU ------------------------------------------------------------------
def proc_status_kib(pid: int, field: str) -> int | None:
    """One `kB` field of /proc/<pid>/status (VmRSS, VmHWM); None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def pss_kib(pid: int) -> int | None:
    """Proportional set size: RSS with shared pages split among their users."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class PeakRss:
    """Samples a process's VmRSS on a thread; the kernel's VmHWM backs up the sampled peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.peak_kib = max(self.peak_kib, rss)
                self.samples += 1
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


# -- numbers ---------------------------------------------------------------------------------
def spread(values: Sequence[float]) -> str:
    """min / median / max, the way every figure here is reported."""
    if not values:
        return "n/a"
    return f"min {min(values):.3f}  median {statistics.median(values):.3f}  max {max(values):.3f}"


# -- interruption ----------------------------------------------------------------------------
@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every `finally` and ExitStack callback still runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for(
    condition: Callable[[], bool],
    what: str,
    processes: Iterable[ManagedProcess] = (),
    *,
    timeout: float = 120.0,
    interval: float = 0.05,
) -> float:
    """Poll until true; fail fast with the log tail of a process that died. Returns seconds."""
    started = time.monotonic()
    watched = list(processes)
    while not condition():
        for process in watched:
            reason = process.exit_reason()
            if reason is not None:
                raise RuntimeError(f"while waiting for {what}: {reason}")
        if time.monotonic() - started > timeout:
            tails = "\n".join(f"--- {p.name}\n{p.log_tail(10)}" for p in watched[-3:])
            raise TimeoutError(f"timed out after {timeout:.0f}s: {what}\n{tails}")
        time.sleep(interval)
    return time.monotonic() - started


# -- Kubernetes ------------------------------------------------------------------------------
def create_nodes(
    core: client.CoreV1Api,
    labels: dict[str, dict[str, str]],
    *,
    on_created: Callable[[], None] | None = None,
    workers: int = 8,
) -> None:
    """Node objects (no kubelet: just API objects), created by a small thread pool."""

    def create(name: str) -> None:
        core.create_node({"metadata": {"name": name, "labels": labels[name]}})
        if on_created is not None:
            on_created()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, labels))


def delete_nodes(
    core: client.CoreV1Api, custom: client.CustomObjectsApi | None, names: Iterable[str]
) -> None:
    """Delete Nodes and their NodeCaches; a missing one is fine (teardown after a failure)."""

    def delete(name: str) -> None:
        with contextlib.suppress(ApiException, HTTPError, OSError):
            core.delete_node(name)
        if custom is not None:
            with contextlib.suppress(ApiException, HTTPError, OSError):
                custom.delete_cluster_custom_object(GROUP, VERSION, NODE_CACHES, name)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(delete, list(names)))


def operator_pacing() -> str:
    """The operator's reconcile intervals, printed with every figure that depends on them."""
    return (
        f"operator: ACTIVE_INTERVAL {handlers.ACTIVE_INTERVAL} s, "
        f"WAITING_INTERVAL {getattr(handlers, 'WAITING_INTERVAL', 'until the next deadline')}, "
        f"SETTLED_INTERVAL {handlers.SETTLED_INTERVAL} s"
    )


def progress_bars() -> Progress:
    """The benchmarks' progress display: what, a bar, n/m, elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def stop_processes(processes: list[ManagedProcess]) -> None:
    """Stop by PID, several at once: 50 agents one after another would take a while."""
    if not processes:
        return

    def stop(process: ManagedProcess) -> None:
        with contextlib.suppress(Exception):
            process.stop()

    with ThreadPoolExecutor(min(16, len(processes))) as pool:
        list(pool.map(stop, processes))


class Recorder:
    """Watches one resource and keeps (arrival time.time(), event type, object) for each event.

    Arrival times are what an agent or the operator would see at best: the same watch,
    on the same loopback, so the breakdown can place each step between two arrivals.
    """

    def __init__(
        self,
        lister: Callable[..., Any],
        *args: str,
        on_event: Callable[[float, dict[str, Any]], None] | None = None,
        keep: bool = True,
    ) -> None:
        """`keep=False`: only call `on_event` (a 500-node run would hold every version)."""
        self.lister = lister
        self.args = args
        self.on_event = on_event
        self.keep = keep
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._watch = watch.Watch()
        self._stopped = False
        listed = lister(*args)
        for item in listed["items"]:
            self._record(time.time(), "LISTED", item)
        self._thread = threading.Thread(
            target=self._run, args=(listed["metadata"]["resourceVersion"],), daemon=True
        )
        self._thread.start()

    def _run(self, resource_version: str) -> None:
        while not self._stopped:
            try:
                stream = self._watch.stream(
                    self.lister, *self.args, resource_version=resource_version, timeout_seconds=600
                )
                for event in stream:
                    now = time.time()
                    body = event["object"]
                    if event["type"] == "ERROR":
                        raise ApiException(status=body.get("code", 500), reason="watch error")
                    resource_version = body["metadata"]["resourceVersion"]
                    self._record(now, event["type"], body)
            except (ApiException, HTTPError, OSError, ValueError):
                if self._stopped:
                    return
                time.sleep(0.2)  # re-watch from the last version seen

    def _record(self, now: float, kind: str, body: dict[str, Any]) -> None:
        if self.keep:
            with self._lock:
                self.events.append((now, kind, body))
        if self.on_event is not None:
            self.on_event(now, body)

    def since(self, start: float) -> list[tuple[float, str, dict[str, Any]]]:
        with self._lock:
            return [e for e in self.events if e[0] >= start]

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()
