"""What serving peers costs the serving node: its CPU per GB/s sent, and its flips and
reloads while it serves, beside the same flips idle, in one run.

One standalone `modelcache agent` process (peers on, its defaults: 4 uploads at once, no
rate cap) holds a big model (--mib MiB in one file, pulled from SeaweedFS on loopback)
and a small one in two versions, v1 and v2, whose node.yaml names a reload endpoint (a
small HTTP server here that answers ok at once, as an inference pod's runtime does).
Then --rounds times, so that a drift of the machine's load falls on both alike:
  idle     --flips switches of the small model between v1 and v2 (node.yaml rewritten),
           nothing else going on;
  serving  a loader process (not the agent: its CPU is not counted) takes the big blob
           from the agent's peer server as fast as it can with `--streams` streams
           (PeerClient, as a neighbour does; at nice 19: it stands for other machines),
           and the same switches are made meanwhile.
Per switch, from the agent's own event log and the endpoint's clock: the flip
(AGENT_CONFIG -> L2_FLIP, the config read to `current` renamed) and the reload
(AGENT_CONFIG -> the POST arriving at the endpoint). The serving node's CPU is
utime + stime of the agent process (/proc/PID/stat) over the serving window, sendfile's
kernel time included, divided by the GB/s the loader received.
Usage: .venv/bin/python bench/peer_serve.py [--mib 1024] [--flips 10] [--rounds 3] [--streams 4]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from _reload_endpoint import PodServer
from rich.console import Console
from rich.table import Table

from modelcache.agent.events import read_events
from modelcache.fleet import PeerClient, new_token
from modelcache.sources import Credentials, open_source, publish
from modelcache.testing import ObjectStore
from modelcache.testing.fleet import modelcache_process
from modelcache.testing.ports import LOOPBACK, free_port, is_listening
from modelcache.testing.process import ManagedProcess

BUCKET = "bench"
BIG = "bench/big"
SMALL = "bench/small"
MIB = 1024 * 1024
SMALL_MIB = 8
TICK = os.sysconf("SC_CLK_TCK")
TARGET_CORES_PER_GBPS = 1.0
TARGET_SLOWDOWN = 2.0  # flips and reloads while serving, x idle
NICE_19 = ("nice", "-n", "19")
console = Console()


class BenchError(RuntimeError):
    """The run could not be made; the message says why."""


# -- the inference pod's reload endpoint ------------------------------------------------------


# -- the loader: a neighbour taking the big blob, in its own process --------------------------
def load(url: str, token: str, sha256: str, streams: int, stop_file: Path) -> None:
    """Take the blob whole, again and again, on `streams` threads until `stop_file` exists
    (`<stop_file>.started` once bytes flow); print the bytes and the seconds as JSON."""
    started_file = stop_file.with_suffix(".started")
    client = PeerClient("serving", url, token)
    received = [0] * streams
    refused = [0] * streams

    def stream(i: int) -> None:
        while not stop_file.exists():
            try:
                with client.blob(sha256) as body:
                    for chunk in body:
                        received[i] += len(chunk)
                        if not i and received[0] == len(chunk):
                            started_file.touch()  # under way: the bench may measure
                        if stop_file.exists():
                            return
            except Exception:  # a busy answer or a reset: count it, go on
                refused[i] += 1
                time.sleep(0.05)

    started = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    print(json.dumps({"bytes": sum(received), "seconds": seconds, "refused": sum(refused)}))


# -- the serving node -------------------------------------------------------------------------
@dataclass
class Node:
    home: Path
    peer_port: int
    reload_url: str
    source: str
    token_file: Path
    process: ManagedProcess | None = None

    @property
    def root(self) -> Path:
        return self.home / "cache"

    def write_config(self, small_version: str) -> None:
        config: dict[str, Any] = {
            "root": str(self.root),
            "node": "serving",
            "metrics_port": None,
            "poll_seconds": 0.05,
            "verify": {"enabled": False},  # measured: serving, not the scrubber
            "models": [
                {"name": BIG, "source": f"{self.source}/big", "version": "v1"},
                {
                    "name": SMALL,
                    "source": f"{self.source}/small",
                    "version": small_version,
                    "reload": [self.reload_url],
                },
            ],
            "peers": {
                "listen_host": LOOPBACK,
                "listen_port": self.peer_port,
                "token_file": str(self.token_file),
                "nodes": [{"name": "serving", "url": f"http://{LOOPBACK}:{self.peer_port}"}],
            },
        }
        temp = self.home / "node.yaml.tmp"
        temp.write_text(yaml.safe_dump(config))
        os.replace(temp, self.home / "node.yaml")

    def live(self, model: str) -> str | None:
        link = self.root / "models" / model / "current"
        return link.resolve().name if link.is_symlink() else None

    def cpu_seconds(self) -> float:
        assert self.process is not None
        assert self.process.pid is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def wait_for(check: Any, what: str, timeout: float, node: Node) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert node.process is not None
        if (reason := node.process.exit_reason()) is not None:
            raise BenchError(f"{reason}\n{node.process.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not after {timeout:g} s")
        time.sleep(0.02)


def _ts(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["ts"]).timestamp()


@dataclass
class Switch:
    flip: float  # AGENT_CONFIG -> L2_FLIP, seconds
    reload: float  # AGENT_CONFIG -> the reload POST's arrival, seconds


def switch(node: Node, pod: PodServer, version: str) -> Switch:
    """node.yaml to `version` of the small model; wait for its reload; the two latencies."""
    seen = len(read_events(node.root / "events.jsonl"))
    calls = len(pod.received)
    node.write_config(version)
    wait_for(lambda: len(pod.received) > calls, f"the reload to {version}", 60, node)
    arrived, got = pod.received[calls]
    if got != version:
        raise BenchError(f"the reload named {got}, not {version}")
    new = read_events(node.root / "events.jsonl")[seen:]
    loaded = next(e for e in new if e["event"] == "AGENT_CONFIG")
    flipped = next(e for e in new if e["event"] == "L2_FLIP" and e["model"].endswith(SMALL))
    return Switch(flip=_ts(flipped) - _ts(loaded), reload=arrived - _ts(loaded))


def switches(node: Node, pod: PodServer, count: int) -> list[Switch]:
    made = []
    for i in range(count):
        made.append(switch(node, pod, "v2" if node.live(SMALL) == "v1" else "v1"))
        time.sleep(0.1 + 0.05 * (i % 3))  # not in step with the poll
    return made


def write_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(os.urandom(MIB))


@dataclass
class Result:
    idle: list[Switch]
    serving: list[Switch]
    served_bytes: int
    served_seconds: float
    cpu_serving: float  # agent CPU seconds in the serving windows
    cpu_idle: float  # agent CPU seconds over idle time of the same length
    refused: int


def run(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> Result:
    store = stack.enter_context(ObjectStore(work_dir=work / "weed"))
    store.create_bucket(BUCKET)
    source = f"oss://{BUCKET}/serve"
    credentials = Credentials(endpoint=store.endpoint)
    console.print(f"[bold]setup[/]: SeaweedFS, a {args.mib} MiB model and a {SMALL_MIB} MiB one")
    write_file(work / "big" / "weights.safetensors", args.mib * MIB)
    manifest = publish(open_source(f"{source}/big", credentials), work / "big", "v1")
    big_sha = manifest.files[0].sha256
    for version in ("v1", "v2"):
        write_file(work / f"small-{version}" / "lora.safetensors", SMALL_MIB * MIB)
        publish(open_source(f"{source}/small", credentials), work / f"small-{version}", version)
    pod = PodServer((LOOPBACK, 0))
    stack.callback(pod.server_close)
    stack.callback(pod.shutdown)
    threading.Thread(target=pod.serve_forever, daemon=True).start()
    token_file = work / "peer-token"
    token = new_token()
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    node = Node(
        work / "node",
        free_port(),
        f"http://{LOOPBACK}:{pod.server_address[1]}/modelcache/reload",
        source,
        token_file,
    )
    node.home.mkdir()
    node.write_config("v2")
    node.process = modelcache_process(
        "agent serving",
        ["agent", "--config", str(node.home / "node.yaml")],
        log_path=node.home / "agent.log",
        env={"OSS_ENDPOINT": store.endpoint},
    )
    stack.callback(node.process.stop)
    node.process.start()
    console.print("pulling both models (and v2, then v1, of the small one) ...")
    wait_for(
        lambda: node.live(BIG) == "v1" and node.live(SMALL) == "v2" and pod.received,
        "the first pulls",
        900,
        node,
    )
    switch(node, pod, "v1")  # both versions of the small model are held from here on
    wait_for(lambda: is_listening(node.peer_port), "the peer server", 30, node)

    result = Result([], [], 0, 0.0, 0.0, 0.0, 0)
    for round_ in range(1, args.rounds + 1):
        console.print(f"[bold]round {round_}/{args.rounds}, idle[/]: {args.flips} switches")
        result.idle += switches(node, pod, args.flips)
        console.print(
            f"[bold]round {round_}/{args.rounds}, serving[/]: a loader with {args.streams} "
            f"streams, {args.flips} switches"
        )
        serve(args, work / f"stop-{round_}", node, token, big_sha, pod, result)
    cpu_before = node.cpu_seconds()
    time.sleep(result.served_seconds / args.rounds)
    result.cpu_idle = (node.cpu_seconds() - cpu_before) * args.rounds
    return result


def serve(  # noqa: PLR0917 - one window's parts
    args: argparse.Namespace,
    stop_file: Path,
    node: Node,
    token: str,
    sha256: str,
    pod: PodServer,
    result: Result,
) -> None:
    """One serving window: a loader process takes the big blob while the small model is
    switched; its bytes, the agent's CPU and the switches go into `result`."""
    # The loader stands for the neighbours, other machines: at nice 19 it takes only what
    # the serving node leaves of this machine's cores.
    asked = (node_url(node), token, sha256, str(args.streams))
    loader = subprocess.Popen(
        [*NICE_19, sys.executable, __file__, "--load", *asked],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "MODELCACHE_BENCH_STOP_FILE": str(stop_file)},
    )
    try:
        deadline = time.monotonic() + 120
        while not stop_file.with_suffix(".started").exists():
            if loader.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the loader took no bytes (exit code {loader.poll()})")
            time.sleep(0.05)
        time.sleep(args.warmup)  # every stream under way
        cpu_before, clock_before = node.cpu_seconds(), time.perf_counter()
        result.serving += switches(node, pod, args.flips)
        time.sleep(max(0.0, args.min_serve - (time.perf_counter() - clock_before)))
        cpu = node.cpu_seconds() - cpu_before
        window = time.perf_counter() - clock_before
        stop_file.touch()
        out, _ = loader.communicate(timeout=120)
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait()
    loaded = json.loads(out.strip().splitlines()[-1])
    # The loader's mean rate over its life stands for the window's (warm-up before it).
    result.served_bytes += int(loaded["bytes"] / loaded["seconds"] * window)
    result.served_seconds += window
    result.cpu_serving += cpu
    result.refused += loaded["refused"]


def node_url(node: Node) -> str:
    return f"http://{LOOPBACK}:{node.peer_port}"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(result: Result, args: argparse.Namespace) -> None:
    gbps = result.served_bytes / result.served_seconds / 1e9
    cores = result.cpu_serving / result.served_seconds
    idle_cores = result.cpu_idle / result.served_seconds
    per_gbps = (cores - idle_cores) / gbps if gbps else float("nan")
    console.print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Linux {platform.release()}, python {platform.python_version()}; the agent, the "
        "loader and SeaweedFS share it"
    )
    console.print(
        f"served: {gbps:.2f} GB/s over {result.served_seconds:.1f} s with {args.streams} "
        f"streams ({result.refused} busy/refused answers); the agent used {cores:.2f} cores "
        f"(idle over the same time: {idle_cores:.3f})"
    )
    ok = per_gbps <= TARGET_CORES_PER_GBPS
    console.print(
        f"[bold]serving cost: {per_gbps:.2f} cores per GB/s[/] (target <= "
        f"{TARGET_CORES_PER_GBPS:g}: {'met' if ok else 'NOT met'})"
    )
    table = Table(
        title=f"flips and reloads of the small model, ms from the config read "
        f"({len(result.idle)} idle, {len(result.serving)} serving, interleaved)"
    )
    for column in ("", "idle", "serving", "serving / idle", "target"):
        table.add_column(column, justify="right")
    for what, pick in (("flip", lambda s: s.flip), ("reload", lambda s: s.reload)):
        for label, q in (("median", 0.5), ("p90", 0.9)):
            idle = quantile([pick(s) for s in result.idle], q)
            serving = quantile([pick(s) for s in result.serving], q)
            ratio = serving / idle if idle > 0 else float("inf")
            verdict = "yes" if ratio <= TARGET_SLOWDOWN else "NO"
            table.add_row(
                f"{what} {label}",
                f"{idle * 1000:.1f}",
                f"{serving * 1000:.1f}",
                f"{ratio:.2f} x",
                f"<= {TARGET_SLOWDOWN:g} x {verdict}",
            )
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="the served blob (default 1024)")
    parser.add_argument("--flips", type=int, default=10, help="switches per phase (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="idle + serving rounds (default 3)")
    parser.add_argument("--streams", type=int, default=4, help="loader streams (default 4)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--min-serve", type=float, default=10.0, help="serving window, s")
    parser.add_argument("--work-dir", help="where the store and the cache go")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--load", nargs=4, metavar=("URL", "TOKEN", "SHA256", "STREAMS"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.load:
        url, token, sha, streams = args.load
        load(url, token, sha, int(streams), Path(os.environ["MODELCACHE_BENCH_STOP_FILE"]))
        return
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.work_dir)))
        try:
            result = run(args, work, stack)
        except BenchError as exc:
            raise SystemExit(f"bench/peer_serve.py: {exc}") from None
    report(result, args)
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=1))


if __name__ == "__main__":
    main()
