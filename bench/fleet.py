"""Fleet fan-out over one shaped line: N agents with peers off and on, a node joining, N = 20.

SeaweedFS runs in a network namespace behind ONE veth pair shaped with `tc htb`
(default 100 Mbit/s each way, the case's leased line), and a user-space delay line
on the host adds the round trip (default 45 ms) and counts the bytes it carries:
every agent reaches L3 through it, as a site's nodes share its WAN line. The
agents are standalone `modelcache agent` processes, each with its own cache root;
with peers on they serve each other on 127.0.0.1 (unshaped: the site's LAN).

A model of --mib MiB in three files (70 %, 25 %, 5 %, random bytes) is published
once, unshaped, with piece digests (manifest schema 2). Then, in one run, each on
fresh cache roots, with the agents started idle and the version rolled out by
rewriting every node.yaml at once:
  1. one node alone (the baseline: seconds on the same line);
  2. --nodes nodes, peers off: seconds until every node holds the version, L3 bytes;
  3. --nodes nodes, peers on: the same;
  4. one node joining the nodes of (3): seconds and L3 bytes;
  5. --big-nodes nodes, peers on (peers off there is --big-nodes x by construction).
L3 bytes are the delay line's tally (TCP payload from the store: what OSS bills),
beside the veth's rx counter (the wire, headers included). A PNG (--png) shows the
bytes each node holds over time (its blobs/ plus the pieces its partial files'
resume records claim, sampled every 0.5 s), peers off beside peers on.
Needs root (a namespace, a veth pair, tc qdiscs) and about (max(nodes + 1,
big-nodes) + 2) x the model's size of free disk under --work-dir.
Usage: sudo .venv/bin/python bench/fleet.py [--nodes 6] [--big-nodes 20] [--mib 1024]
       [--rate-mbit 100] [--rtt-ms 45] [--png bench/fleet.png] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from modelcache.agent.events import read_events
from modelcache.api import Manifest
from modelcache.fleet import PeerClient, PeerError, new_token
from modelcache.sources import Credentials, open_source, publish
from modelcache.sources.resume import ResumeRecord
from modelcache.testing import ObjectStore
from modelcache.testing.delayproxy import DelayProxy
from modelcache.testing.fleet import modelcache_process
from modelcache.testing.netns import ShapedLink, ShapedLinkUnavailable
from modelcache.testing.ports import LOOPBACK, free_port, is_listening
from modelcache.testing.process import ManagedProcess

BUCKET = "bench"
PREFIX = "fleet"
MODEL = "bench/fleet"
VERSION = "v1"
MIB = 1024 * 1024
# The model's files and their shares of --mib: a UNet, a text encoder, a VAE.
FILES = (
    ("unet/diffusion_pytorch_model.safetensors", 0.70),
    ("text_encoder/model.safetensors", 0.25),
    ("vae/diffusion_pytorch_model.safetensors", 0.05),
)
SAMPLE_SECONDS = 0.5
AGENT_START_TIMEOUT = 180.0
# The targets (issue 16).
TARGET_L3 = 1.05  # x the model's size, on --nodes and --big-nodes nodes
TARGET_SECONDS = 1.15  # x one node alone, on --nodes nodes
TARGET_SECONDS_BIG = 1.25  # x one node alone, on --big-nodes nodes
TARGET_JOIN_PATHS = 2.0  # a joining node: at most 2 x size / the peer path's rate
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}$")

# Wide enough for the table when the output goes to a file or a pipe.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


class BenchError(RuntimeError):
    """A run that cannot go on (an agent died, the disk is too small); the message says why."""


def machine() -> str:
    """Cores and CPU model: the fleet shares this machine's cores, a reader should know them."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024**2:.0f} GiB RAM"
    return (
        f"{os.cpu_count()} cores, {model}{mem}, Linux {platform.release()}, "
        f"python {platform.python_version()}"
    )


def gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


# -- the model -------------------------------------------------------------------------------


def file_sizes(mib: int) -> dict[str, int]:
    """Bytes of each file: the shares of `mib` MiB, the last one taking the remainder."""
    total = mib * MIB
    sizes = {name: int(total * share) for name, share in FILES[:-1]}
    sizes[FILES[-1][0]] = total - sum(sizes.values())
    return sizes


def write_model(directory: Path, sizes: dict[str, int]) -> None:
    """Random bytes (incompressible, like weights), written a MiB at a time."""
    for relative, size in sizes.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            left = size
            while left:
                chunk = min(MIB, left)
                handle.write(os.urandom(chunk))
                left -= chunk


# -- agents ----------------------------------------------------------------------------------


@dataclass
class Agent:
    """One `modelcache agent --config node.yaml` process with its own cache root."""

    name: str
    home: Path
    port: int
    process: ManagedProcess | None = None

    @property
    def root(self) -> Path:
        return self.home / "cache"

    @property
    def config_path(self) -> Path:
        return self.home / "node.yaml"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def live(self) -> str | None:
        link = self.root / "models" / MODEL / "current"
        return link.resolve().name if link.is_symlink() else None

    def up(self) -> bool:
        """Its loop has begun: the first AGENT_CONFIG event is in its log (and, with peers,
        its peer server answers)."""
        events = self.root / "events.jsonl"
        try:
            started = '"AGENT_CONFIG"' in events.read_text()
        except FileNotFoundError:
            return False
        return started

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.root / "events.jsonl")

    def held_bytes(self) -> int:
        """Bytes this node holds durably: complete blobs, plus the pieces that the resume
        records of its partial files claim (a partial file is preallocated whole, so its
        size on disk says nothing)."""
        held = 0
        blobs = self.root / "blobs" / "sha256"
        with contextlib.suppress(FileNotFoundError):
            for shard in os.scandir(blobs):
                with contextlib.suppress(FileNotFoundError):
                    for entry in os.scandir(shard.path):
                        if _BLOB_NAME.match(entry.name):
                            with contextlib.suppress(FileNotFoundError):
                                held += entry.stat().st_size
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / "tmp"):
                if entry.name.endswith(".resume.json"):
                    held += _claimed(Path(entry.path))
        return held


def _claimed(path: Path) -> int:
    """The bytes a resume record claims: its finished pieces and the started ones' heads."""
    try:
        record = ResumeRecord.from_json(path.read_bytes())
    except (OSError, ValueError):
        return 0  # gone (adopted) or being replaced this instant
    size, part = record.size, record.part_size
    done = sum(min(part, size - i * part) for i in record.done)
    return done + sum(n for _, n in record.partial)


@dataclass
class Site:
    """The shared parts: where agents live, the line to L3, the token, the model's URL."""

    work: Path
    line: DelayProxy
    link: ShapedLink
    token_file: Path
    url: str
    token: str
    agents: list[Agent] = field(default_factory=list)

    def new_agents(self, phase: str, names: Sequence[str]) -> list[Agent]:
        made = [Agent(n, self.work / phase / n, free_port()) for n in names]
        self.agents.extend(made)
        return made

    def write_config(self, agent: Agent, *, roll_out: bool, peers: Sequence[Agent] | None) -> None:
        """node.yaml, written whole then renamed in (the agent polls it every 0.2 s)."""
        config: dict[str, Any] = {
            "root": str(agent.root),
            "node": agent.name,
            "metrics_port": None,
            "poll_seconds": 0.2,
            # The scrubber re-reads held files: measured here are pulls, not re-verification.
            "verify": {"enabled": False},
            "models": (
                [{"name": MODEL, "source": self.url, "version": VERSION}] if roll_out else []
            ),
        }
        if peers is not None:
            config["peers"] = {
                "listen_host": LOOPBACK,
                "listen_port": agent.port,
                "token_file": str(self.token_file),
                "nodes": [{"name": p.name, "url": p.url} for p in peers],
            }
        agent.home.mkdir(parents=True, exist_ok=True)
        temp = agent.config_path.with_name("node.yaml.tmp")
        temp.write_text(yaml.safe_dump(config))
        os.replace(temp, agent.config_path)

    def start(self, agents: Sequence[Agent], peers: Sequence[Agent] | None) -> None:
        """Start `agents` idle (no model yet) and wait until every one is up: the rollout
        then times pulls, not Python's start-up on a shared machine."""
        env = {"OSS_ENDPOINT": self.line.endpoint}
        for agent in agents:
            self.write_config(agent, roll_out=False, peers=peers)
            agent.process = modelcache_process(
                f"agent {agent.name}",
                ["agent", "--config", str(agent.config_path)],
                log_path=agent.home / "agent.log",
                env=env,
            )
            agent.process.start()
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        waiting = list(agents)
        while waiting:
            for agent in list(waiting):
                assert agent.process is not None
                if (reason := agent.process.exit_reason()) is not None:
                    raise BenchError(reason)
                if agent.up() and (peers is None or is_listening(agent.port)):
                    waiting.remove(agent)
            if time.monotonic() > deadline:
                raise BenchError(f"{len(waiting)} agents not up after {AGENT_START_TIMEOUT:g} s")
            time.sleep(0.2)

    def stop(self, agents: Sequence[Agent]) -> None:
        """Stop by PID, all at once (each gets SIGTERM, SIGKILL after its grace), then free
        their cache roots."""
        running = [a.process for a in agents if a.process is not None]
        with ThreadPoolExecutor(max(1, len(running))) as pool:
            list(pool.map(lambda p: p.stop(), running))
        for agent in agents:
            agent.process = None
            shutil.rmtree(agent.home, ignore_errors=True)
            with contextlib.suppress(ValueError):
                self.agents.remove(agent)

    def l3(self) -> tuple[int, int]:
        """(payload bytes the line carried down, bytes the veth received): two counters."""
        return self.line.tally().down, self.link.counters().rx_bytes


# -- one rollout -----------------------------------------------------------------------------


@dataclass
class Phase:
    """One rollout's figures."""

    label: str
    nodes: int
    peers: bool
    size: int
    seconds: float | None = None  # until the last node held the version
    per_node: dict[str, float] = field(default_factory=dict)  # node -> seconds
    l3_payload: int = 0  # the delay line's tally: HTTP bodies and heads from the store
    l3_wire: int = 0  # the veth's rx counter: the same plus TCP/IP/Ethernet headers
    from_peers: int = 0
    pieces_from_l3: int = 0
    pieces_from_peers: int = 0
    bad_pieces: int = 0
    peers_unavailable: int = 0
    trouble: list[str] = field(default_factory=list)  # the first few peer events, for a reader
    error: str = ""
    samples: list[tuple[float, list[int]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.seconds is not None and not self.error

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("samples")
        return out


class Sampler:
    """Bytes held by each agent every SAMPLE_SECONDS, on a thread of its own."""

    def __init__(self, agents: Sequence[Agent]) -> None:
        self.agents = list(agents)
        self.samples: list[tuple[float, list[int]]] = []
        self.latest = [0] * len(self.agents)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._t0 = time.monotonic()

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def sample(self) -> None:
        # Never less than before: a rollout only adds bytes, and between a verified file's
        # record being removed and its blob being adopted a node holds it nowhere we look.
        held = [max(a.held_bytes(), last) for a, last in zip(self.agents, self.latest, strict=True)]
        self.latest = held
        self.samples.append((time.monotonic() - self._t0, held))

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def roll_out(
    site: Site,
    phase: Phase,
    agents: Sequence[Agent],
    peers: Sequence[Agent] | None,
    *,
    progress: Progress,
    timeout: float,
) -> Phase:
    """Point every agent's node.yaml at the version at once; wait until each holds it."""
    total = phase.size * len(agents)
    task = progress.add_task(phase.label, total=total, l3="")
    payload0, wire0 = site.l3()
    sampler = Sampler(agents)
    t0 = time.monotonic()
    for agent in agents:
        site.write_config(agent, roll_out=True, peers=peers)
    sampler.start(t0)
    deadline = t0 + timeout
    try:
        while len(phase.per_node) < len(agents):
            now = time.monotonic()
            for agent in agents:
                if agent.name not in phase.per_node and agent.live() == VERSION:
                    phase.per_node[agent.name] = round(now - t0, 2)
                assert agent.process is not None
                if (reason := agent.process.exit_reason()) is not None:
                    raise BenchError(reason)
            payload, _ = site.l3()
            progress.update(
                task,
                completed=min(total, sum(sampler.latest)),
                l3=f"L3 {gib(payload - payload0)} ({(payload - payload0) / phase.size:.2f}x)",
            )
            if now > deadline:
                phase.error = (
                    f"timed out after {timeout:.0f} s: {len(phase.per_node)} of "
                    f"{len(agents)} nodes hold {VERSION}"
                )
                break
            time.sleep(0.1)
    finally:
        sampler.stop()
        phase.samples = sampler.samples
    if not phase.error:
        phase.seconds = max(phase.per_node.values())
    time.sleep(0.3)  # the line writes its tally every 0.1 s
    payload, wire = site.l3()
    phase.l3_payload, phase.l3_wire = payload - payload0, wire - wire0
    progress.update(task, completed=total if phase.ok else None, l3=f"L3 {gib(phase.l3_payload)}")
    count_events(phase, agents)
    return phase


def count_events(phase: Phase, agents: Sequence[Agent]) -> None:
    """Where the agents say their pieces came from, and what went wrong with peers."""
    for agent in agents:
        for event in agent.events():
            if event["event"] == "L3_FETCH":
                phase.from_peers += int(event.get("bytes_from_peers", 0))
                phase.pieces_from_l3 += int(event.get("pieces_from_l3", 0))
                phase.pieces_from_peers += int(event.get("pieces_from_peers", 0))
            elif event["event"] in ("PEER_BAD_PIECE", "PEER_UNAVAILABLE"):
                if event["event"] == "PEER_BAD_PIECE":
                    phase.bad_pieces += 1
                else:
                    phase.peers_unavailable += 1
                if len(phase.trouble) < 10:
                    phase.trouble.append(f"{agent.name}: {json.dumps(event)[:300]}")


def phase_timeout(size: int, rate: float, readers: int) -> float:
    """Generous: three times what `readers` full copies take on the line, plus two minutes."""
    return 3 * readers * size / rate + 120


# -- the peer path ---------------------------------------------------------------------------


def loopback_rate(nbytes: int = 512 * MIB) -> float:
    """Bytes per second of one TCP stream on 127.0.0.1 (the peer path, bare)."""
    with socket.create_server((LOOPBACK, 0)) as server:
        port = server.getsockname()[1]
        received = 0

        def drain() -> None:
            nonlocal received
            conn, _ = server.accept()
            with conn:
                buffer = bytearray(4 * MIB)
                while got := conn.recv_into(buffer):
                    received += got

        reader = threading.Thread(target=drain)
        reader.start()
        block = memoryview(os.urandom(4 * MIB))
        started = time.perf_counter()
        with socket.create_connection((LOOPBACK, port)) as sender:
            for _ in range(nbytes // len(block)):
                sender.sendall(block)
        reader.join()
        return received / (time.perf_counter() - started)


def peer_blob_rate(holder: Agent, token: str, sha256: str) -> float:
    """Bytes per second of one whole blob from a holder's peer server (sendfile, our client)."""
    client = PeerClient(holder.name, holder.url, token)
    try:
        started = time.perf_counter()
        with client.blob(sha256) as body:
            received = sum(len(chunk) for chunk in body)
        return received / (time.perf_counter() - started)
    finally:
        client.close()


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    size: int
    files: dict[str, int]
    alone: Phase | None = None
    off: Phase | None = None
    on: Phase | None = None
    join: Phase | None = None
    big: Phase | None = None
    loopback_rate: float | None = None
    peer_rate: float | None = None
    manifest: Manifest | None = None

    def phases(self) -> list[Phase]:
        return [p for p in (self.alone, self.off, self.on, self.join, self.big) if p is not None]


def names(prefix: str, count: int, first: int = 1) -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(first, first + count)]


def set_up(stack: contextlib.ExitStack, args: argparse.Namespace, result: Run) -> Site:
    """The link, the store, the published model, the delay line and the token, each undone
    by `stack`; then the link is shaped."""
    work = Path(
        stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-", dir=args.work_dir))
    )
    console.print(f"[bold]setup[/]: namespace + veth, SeaweedFS, a {args.mib} MiB model")
    link = stack.enter_context(ShapedLink(args.rate_mbit, shaped=False))
    store = stack.enter_context(
        ObjectStore(host=link.ns_address, command_prefix=link.exec_prefix, work_dir=work / "weed")
    )
    store.create_bucket(BUCKET)
    url = f"oss://{BUCKET}/{PREFIX}"
    source = work / "model"
    write_model(source, result.files)
    result.manifest = publish(
        open_source(url, Credentials(endpoint=store.endpoint)), source, VERSION
    )
    shutil.rmtree(source)
    pieces = {f.path: f.piece_count() for f in result.manifest.files}
    console.print(f"published {VERSION} unshaped: pieces per file {pieces}")
    link.shape()
    line = stack.enter_context(
        DelayProxy(
            (link.ns_address, store.port),
            rtt_ms=args.rtt_ms,
            log_path=work / "line.log",
            stats_path=work / "line.json",
        )
    )
    token = new_token()
    token_file = work / "peer-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    site = Site(work, line, link, token_file, url, token)
    stack.callback(lambda: site.stop(list(site.agents)))
    console.print(
        f"[bold]rolling out[/] over {args.rate_mbit:g} Mbit/s, rtt {args.rtt_ms:g} ms "
        f"(store {link.ns_address} in namespace {link.name}, agents via {line.endpoint})"
    )
    return site


@dataclass
class Rollouts:
    """The five rollouts, one after the other, each on fresh cache roots."""

    site: Site
    result: Run
    progress: Progress

    def phase(
        self, label: str, key: str, agents: list[Agent], peers: list[Agent] | None, readers: int
    ) -> Phase:
        size = self.result.size
        found = roll_out(
            self.site,
            Phase(label, len(agents), peers is not None, size),
            agents,
            peers,
            progress=self.progress,
            timeout=phase_timeout(size, self.site.link.rate_bytes_per_s, readers),
        )
        setattr(self.result, key, found)
        if found.error:
            self.progress.console.print(f"[red]{label}: {found.error}[/]")
        return found

    def all(self, n: int, m: int, *, peers_off: bool = True) -> None:
        site = self.site
        alone = site.new_agents("alone", names("solo", 1))
        site.start(alone, None)
        self.phase("1 node alone", "alone", alone, None, 1)
        site.stop(alone)

        if peers_off:
            off = site.new_agents("off", names("gpu", n))
            site.start(off, None)
            self.phase(f"{n} nodes, peers off", "off", off, None, n)
            site.stop(off)

        on = site.new_agents("on", names("gpu", n))
        site.start(on, on)
        self.phase(f"{n} nodes, peers on", "on", on, on, 1)
        self.join(on)
        site.stop(list(site.agents))

        if m > 0:
            big = site.new_agents("big", names("gpu", m))
            site.start(big, big)
            self.phase(f"{m} nodes, peers on", "big", big, big, 1)
            site.stop(big)

    def join(self, holders: list[Agent]) -> None:
        """A node joins: the site's list grows by one on every node, as an operator rolls
        out the new node.yaml; the others hold the version already. Then the peer path's
        rates, with a holder's server."""
        site = self.site
        joiner = site.new_agents("on", names("gpu", 1, first=len(holders) + 1))
        everyone = [*holders, *joiner]
        for agent in holders:
            site.write_config(agent, roll_out=True, peers=everyone)
        site.start(joiner, everyone)
        self.phase("a node joining", "join", joiner, everyone, 1)
        self.result.loopback_rate = loopback_rate()
        assert self.result.manifest is not None
        big_file = max(self.result.manifest.files, key=lambda f: f.size)
        with contextlib.suppress(PeerError):
            self.result.peer_rate = peer_blob_rate(holders[0], site.token, big_file.sha256)


def run(args: argparse.Namespace, result: Run) -> None:
    """Set up, then the five rollouts. Everything started is stopped, and every file written
    removed, on the way out (Ctrl-C and SIGTERM included)."""
    with contextlib.ExitStack() as stack:
        site = set_up(stack, args, result)
        columns = (
            TextColumn("{task.description:22}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[l3]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, refresh_per_second=4) as progress:
            rollouts = Rollouts(site, result, progress)
            rollouts.all(args.nodes, args.big_nodes, peers_off=not args.skip_peers_off)


# -- the report ------------------------------------------------------------------------------


def against(value: float | None, target: float | None) -> str:
    """`<= target yes|NO`, or nothing where the row has no target."""
    if target is None:
        return ""
    met = value is not None and value <= target
    return f"<= {target:.2f} " + ("[green]yes[/]" if met else "[red]NO[/]")


def report(result: Run, args: argparse.Namespace) -> Table:
    size = result.size
    alone = result.alone.seconds if result.alone is not None else None
    table = Table(title=f"fleet fan-out: a {gib(size)} model, one {args.rate_mbit:g} Mbit/s line")
    table.add_column("rollout", no_wrap=True)
    for column in (
        "seconds",
        "x alone",
        "target",
        "L3 MiB",
        "x size",
        "target",
        "wire x",
        "from peers",
        "pieces L3/peer",
        "bad / unavailable",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for phase in result.phases():
        times = None
        if phase.seconds is not None and alone and phase is not result.alone:
            times = phase.seconds / alone
        time_target = {id(result.on): TARGET_SECONDS, id(result.big): TARGET_SECONDS_BIG}
        ratio = phase.l3_payload / size
        if phase is result.join:  # no piece from L3: manifests and HEADs only
            met = phase.pieces_from_l3 == 0 and ratio < 0.01
            bytes_column = "no piece " + ("[green]yes[/]" if met else "[red]NO[/]")
        else:
            l3_target = TARGET_L3 if phase is result.on or phase is result.big else None
            bytes_column = against(ratio, l3_target)
        table.add_row(
            phase.label + ("" if not phase.error else f" [red]({phase.error})[/]"),
            f"{phase.seconds:.1f}" if phase.seconds is not None else "-",
            f"{times:.2f}" if times is not None else "",
            against(times, time_target.get(id(phase))),
            f"{phase.l3_payload / MIB:.1f}",
            f"{ratio:.3f}",
            bytes_column,
            f"{phase.l3_wire / size:.3f}",
            gib(phase.from_peers),
            f"{phase.pieces_from_l3}/{phase.pieces_from_peers}",
            f"{phase.bad_pieces} / {phase.peers_unavailable}" if phase.peers else "",
        )
        if phase is result.off and args.big_nodes > 0:
            m = args.big_nodes
            table.add_row(
                f"[dim]{m} nodes, peers off[/]",
                "[dim]skipped[/]",
                f"[dim]~{m}[/]",
                "",
                "",
                f"[dim]{m}[/]",
                "[dim](by construction)[/]",
                *[""] * 4,
            )
    return table


def join_reading(result: Run) -> list[str]:
    """A joining node's seconds against 2 x size / the peer path's rate."""
    join = result.join
    if join is None or join.seconds is None:
        return []
    lines = []
    for what, rate in (
        ("bare TCP on loopback", result.loopback_rate),
        ("one blob from a peer's server", result.peer_rate),
        ("a 10 Gbit/s LAN", 10e9 / 8),
    ):
        if not rate:
            continue
        bound = TARGET_JOIN_PATHS * result.size / rate
        lines.append(
            f"  {what}: {rate / 1e9:.2f} GB/s -> target {bound:.1f} s; the joining node took "
            f"{join.seconds:.1f} s ({join.seconds / bound:.1f}x the target)"
        )
    return lines


def plot(result: Run, path: Path, alone_seconds: float | None) -> None:
    """Bytes held per node over time: peers off beside peers on (and the big fleet)."""
    import matplotlib  # noqa: PLC0415 - a dev extra, only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = [p for p in (result.off, result.on, result.big) if p is not None and p.samples]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), sharey=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    size_gib = result.size / 1024**3
    for ax, phase in zip(axes, panels, strict=True):
        times = [t for t, _ in phase.samples]
        for node in range(phase.nodes):
            held = [h[node] / 1024**3 for _, h in phase.samples]
            ax.plot(times, held, linewidth=1)
        ax.axhline(size_gib, color="grey", linewidth=0.6, linestyle=":")
        if alone_seconds:
            ax.axvline(alone_seconds, color="black", linewidth=0.8, linestyle="--")
            ax.text(alone_seconds, size_gib * 0.03, " 1 node alone", fontsize=7)
        last = f"{phase.seconds:.0f} s" if phase.seconds else "not done"
        ax.set_title(
            f"{phase.label}: L3 {phase.l3_payload / result.size:.2f}x size, {last}", fontsize=9
        )
        ax.set_xlabel("seconds since the rollout")
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("GiB held per node")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def check_disk(work_dir: str | None, need: int) -> None:
    where = Path(work_dir or tempfile.gettempdir())
    free = shutil.disk_usage(where).free
    if free < need:
        raise SystemExit(
            f"bench/fleet.py: {gib(free)} free under {where}, the run needs about {gib(need)} "
            "(fewer --big-nodes, a smaller --mib, or another --work-dir)"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=6, help="the site's nodes (default 6)")
    parser.add_argument(
        "--big-nodes", type=int, default=20, help="the big site, peers on (default 20; 0: skip)"
    )
    parser.add_argument("--mib", type=int, default=1024, help="model size in MiB (default 1024)")
    parser.add_argument("--rate-mbit", type=float, default=100.0, help="line rate (default 100)")
    parser.add_argument(
        "--rtt-ms", type=float, default=45.0, help="emulated round trip, 0 for none (default 45)"
    )
    parser.add_argument(
        "--png", type=Path, default=Path("bench/fleet.png"), help="the figure (default %(default)s)"
    )
    parser.add_argument(
        "--skip-peers-off",
        action="store_true",
        help="leave out --nodes nodes with peers off (N x the bytes by construction; the "
        "longest phase: N x one node alone)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--work-dir", help="where cache roots and the store go (default: $TMPDIR)")
    args = parser.parse_args()
    if args.nodes < 2 or args.mib < 8:
        parser.error("--nodes must be at least 2 and --mib at least 8")
    return args


def print_report(result: Run, args: argparse.Namespace) -> None:
    link_rate = args.rate_mbit * 1e6 / 8
    console.print()
    console.print(
        f"model: {gib(result.size)} in {len(result.files)} files "
        f"({', '.join(f'{n} {s / MIB:.0f} MiB' for n, s in result.files.items())}), "
        "schema 2 pieces"
    )
    console.print(
        f"line: {args.rate_mbit:g} Mbit/s ({link_rate / 1e6:.2f} MB/s), tc htb on one veth pair; "
        f"rtt {args.rtt_ms:g} ms by a user-space delay line that every agent goes through"
    )
    console.print("peers: 127.0.0.1, unshaped; agents' pull and peers options at their defaults")
    console.print(f"machine: {machine()} (every agent shares it)")
    console.print(report(result, args))
    console.print(
        "L3 MiB: the bytes the line carried from the store (HTTP bodies and heads); "
        "wire x: the veth's rx counter / size (headers included: few, the veth carries "
        "64 KiB GRO segments)"
    )
    for line in join_reading(result):
        console.print(line)
    for phase in result.phases():
        for line in phase.trouble:
            console.print(f"  {phase.label}: {line}", markup=False)


def write_json(path: Path, result: Run, args: argparse.Namespace, seconds: float) -> None:
    figures = {
        "size": result.size,
        "files": result.files,
        "nodes": args.nodes,
        "big_nodes": args.big_nodes,
        "rate_mbit": args.rate_mbit,
        "rtt_ms": args.rtt_ms,
        "machine": machine(),
        "seconds": round(seconds, 1),
        "loopback_rate": result.loopback_rate,
        "peer_rate": result.peer_rate,
        "phases": {
            key: p.summary()
            for key in ("alone", "off", "on", "join", "big")
            if (p := getattr(result, key)) is not None
        },
    }
    path.write_text(json.dumps(figures, indent=2))


def main() -> None:
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit(
            "bench/fleet.py needs root: it makes a network namespace, a veth pair and tc "
            "qdiscs for the shaped line (run it with sudo)"
        )
    signal.signal(signal.SIGTERM, _terminate)
    files = file_sizes(args.mib)
    size = sum(files.values())
    check_disk(args.work_dir, int(size * (max(args.nodes + 1, args.big_nodes) + 2) * 1.1))
    result = Run(size, files)
    started = time.monotonic()
    failed = False
    try:
        run(args, result)
    except ShapedLinkUnavailable as exc:
        raise SystemExit(f"bench/fleet.py: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit(
            "interrupted; agents, namespace, store and cache roots were cleaned up"
        ) from None
    except BenchError as exc:
        console.print(f"[red]bench/fleet.py: {exc}[/]")
        failed = True
    print_report(result, args)
    if args.png:
        plot(result, args.png, result.alone.seconds if result.alone else None)
        if args.png.exists():
            console.print(f"figure: {args.png} ({args.png.stat().st_size / 1024:.0f} KB)")
    if args.json:
        write_json(args.json, result, args, time.monotonic() - started)
    if failed or not all(p.ok for p in result.phases()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
