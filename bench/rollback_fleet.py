"""`modelcache rollback` across 500 nodes: seconds from the command to Available, and where they go.

Real parts on loopback: kube-apiserver + etcd, the CRDs, the operator process
(`python -m modelcache operator`) and N Node objects. The agents are simulated,
all in one separate process (`python -m modelcache.testing.simagents`): each node
runs the real `KubeAgent` (its NodeCache watch, the node reconciler, the pod LIST
before a reload, the paced status patches) on a simulated disk, so a flip is a dict
write and no reload POST is made (no pod matches the reload selector). The rollback
target is held on every node, as retention guarantees.

Setup (not timed): v1, then v2 (canary 1, then waves of `--max-unavailable`), both
Available. Measured, `--repeats` times: `python -m modelcache rollback lora -n
studio` (the real CLI, as a user types it) until a watch sees the ModelVersion
status Available on the target. Where the time goes comes from watches in this
process (their arrival times, one clock): the ModelVersion's spec and status, each
NodeCache's spec (the operator's writes) and status (the agents' answers). CPU
seconds of the operator, the API server + etcd and the simulated agents are read
from /proc over each rollback. Every size in `--nodes` runs on its own control
plane, one after the other, in the same run.

Usage: .venv/bin/python bench/rollback_fleet.py [--nodes 6,500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _cluster import (
    Recorder,
    console,
    cpu_seconds,
    create_nodes,
    delete_nodes,
    load_average,
    machine,
    operator_pacing,
    progress_bars,
    sigterm_as_interrupt,
    spread,
    stop_processes,
    wait_for,
)
from kubernetes import client
from kubernetes import config as kube_config
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from modelcache.api.k8s import API_VERSION, GROUP, MODEL_VERSIONS, NODE_CACHES, VERSION
from modelcache.testing import KubeControlPlane, ensure_toolchain
from modelcache.testing.crds import install_crds
from modelcache.testing.fleet import modelcache_process
from modelcache.testing.process import ManagedProcess

NAMESPACE = "studio"
MODEL = "lora"
# The latest 6 real-agent figure in docs/benchmarks.md ("Rollback across 500 nodes"):
# bench/rollback.py --nodes 6, spec patch -> Available, median, on the 2-core AMD EPYC VM.
REAL_AGENTS_6 = {"patch -> Available, median": 0.239, "every node flipped + reloaded": 0.159}


# -- what the watches saw ---------------------------------------------------------------------
Row = tuple[float, str, str | None, str | None, str | None]


class CacheLog:
    """Per NodeCache event: (arrival, node, this model's spec `active`, status `active`,
    status `reloadedVersion`). Compact: 500 nodes x every write of a run. Also the arrival
    of each spec write (the generation moved) and of each status write (it did not)."""

    def __init__(self) -> None:
        self.events: list[Row] = []
        self.spec_writes: list[float] = []
        self.status_writes: list[float] = []
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, arrived: float, body: dict[str, Any]) -> None:
        spec = _entry(body, "spec")
        status = _entry(body, "status")
        name = str(body["metadata"]["name"])
        row = (
            arrived,
            name,
            spec.get("active"),
            status.get("active"),
            status.get("reloadedVersion"),
        )
        generation = int(body["metadata"].get("generation") or 0)
        with self._lock:
            self.events.append(row)
            before = self._generation.get(name)
            if before is not None:
                (self.spec_writes if generation != before else self.status_writes).append(arrived)
            self._generation[name] = generation

    def since(self, start: float) -> list[Row]:
        with self._lock:
            return [e for e in self.events if e[0] >= start]

    def writes(self, start: float, end: float) -> tuple[int, int]:
        """(spec writes, status writes) that arrived between `start` and `end`."""
        with self._lock:
            return (
                sum(start <= t <= end for t in self.spec_writes),
                sum(start <= t <= end for t in self.status_writes),
            )


def _entry(body: dict[str, Any], part: str) -> dict[str, Any]:
    models = (body.get(part) or {}).get("models") or []
    return next(
        (m for m in models if (m.get("namespace"), m.get("name")) == (NAMESPACE, MODEL)), {}
    )


def _available(body: dict[str, Any], target: str) -> bool:
    status = body.get("status") or {}
    return status.get("phase") == "Available" and status.get("currentVersion") == target


# -- the API server's own account ------------------------------------------------------------
REQUESTS = [
    ("PUT", "nodecaches", ""),
    ("PATCH", "nodecaches", "status"),
    ("LIST", "pods", ""),
    ("PATCH", "modelversions", "status"),
    ("POST", "events", ""),
]


def request_totals(kube: KubeControlPlane) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(verb, resource, subresource) -> (count, seconds) from the API server's
    apiserver_request_duration_seconds: how long it took to answer each kind of request."""
    context = ssl.create_default_context(cafile=str(kube.ca_cert))
    request = urllib.request.Request(  # noqa: S310 - the control plane's https URL
        f"{kube.url}/metrics", headers={"Authorization": f"Bearer {kube.admin_token}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as response:  # noqa: S310
        text = response.read(64 * 2**20).decode()
    totals: dict[tuple[str, str, str], list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_duration_seconds_"):
            continue
        name, _, rest = line.partition("{")
        if not name.endswith(("_sum", "_count")):
            continue
        labels_text, _, value = rest.rpartition("} ")
        labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
        key = tuple(labels.get(k, '""').strip('"') for k in ("verb", "resource", "subresource"))
        slot = totals.setdefault(key, [0.0, 0.0])  # type: ignore[arg-type]
        slot[0 if name.endswith("_count") else 1] += float(value)
    return {k: (v[0], v[1]) for k, v in totals.items()}  # type: ignore[misc]


# -- one measured rollback --------------------------------------------------------------------
@dataclass
class Rollback:
    target: str
    cli_exit: float  # command -> the CLI process exited
    patch: float  # command -> the watch sees spec.version = target
    status_first: float  # command -> the first ModelVersion status naming the target
    first_spec: float  # command -> the first NodeCache spec with active = target
    last_spec: float
    answers: list[float]  # each node: its spec's arrival -> its status report's arrival
    specs: list[float]  # command -> each node's spec arrival, sorted
    last_report: float  # command -> the last NodeCache status reporting the target served
    available: float  # command -> the ModelVersion status Available on the target
    mv_writes: int  # ModelVersion events between the patch and Available (status writes)
    spec_writes: int  # NodeCache spec writes (the operator's) from the command to Available
    status_writes: int  # NodeCache status writes (the agents') from the command to Available
    cpu: dict[str, float]  # process group -> CPU seconds from the command to Available
    requests: dict[tuple[str, str, str], tuple[float, float]]  # (count, seconds) in the window


@dataclass
class Cluster:
    nodes: list[str]
    kube: KubeControlPlane
    custom: client.CustomObjectsApi
    kubeconfig: Path
    operator: ManagedProcess
    agents: ManagedProcess
    kube_pids: list[int]
    caches: CacheLog
    versions: Recorder
    processes: list[ManagedProcess]

    def model_version(self) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, MODEL_VERSIONS, MODEL
        )
        return body

    def cpu(self) -> dict[str, float]:
        return {
            "operator": cpu_seconds(self.operator.pid or 0) or 0.0,
            "kube-apiserver + etcd": sum(cpu_seconds(p) or 0.0 for p in self.kube_pids),
            "simulated agents": cpu_seconds(self.agents.pid or 0) or 0.0,
        }


def roll_out(cluster: Cluster, version: str, progress: Progress) -> float:
    """Set the version and wait until it is Available (setup, not measured)."""
    task = progress.add_task(f"{version} rolling out (nodes serving)", total=len(cluster.nodes))
    started = time.monotonic()
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, MODEL_VERSIONS, MODEL, {"spec": {"version": version}}
    )

    def available() -> bool:
        body = cluster.model_version()
        status = body.get("status") or {}
        if (status.get("rollout") or {}).get("target") == version:
            ready = int(str(status.get("ready") or "0/0").split("/")[0])
            progress.update(task, completed=ready)
        return _available(body, version)

    wait_for(available, f"{version} Available", cluster.processes, timeout=600, interval=0.25)
    return time.monotonic() - started


def measure(cluster: Cluster, target: str) -> Rollback:
    """`modelcache rollback` as a user runs it, then wait for Available and read the watches."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    cpu_before = cluster.cpu()
    requests_before = request_totals(cluster.kube)
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "modelcache", "rollback", MODEL, "-n", NAMESPACE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    cli_exit = time.time() - start
    if done.returncode != 0 or f"-> {target}" not in done.stdout:
        raise RuntimeError(f"modelcache rollback: {done.returncode}\n{done.stdout}{done.stderr}")

    def available_at() -> float | None:
        return next(
            (t for t, _, body in cluster.versions.since(start) if _available(body, target)), None
        )

    wait_for(
        lambda: available_at() is not None,
        f"ModelVersion Available on {target}",
        cluster.processes,
        timeout=300,
        interval=0.01,
    )
    cpu_after = cluster.cpu()
    requests_after = request_totals(cluster.kube)
    avail = available_at()
    assert avail is not None
    nodes = set(cluster.nodes)

    def every_node_reported() -> bool:
        seen = {n for _, n, _, a, r in cluster.caches.since(start) if a == r == target}
        return seen >= nodes

    wait_for(every_node_reported, "every node's report seen by the watch", cluster.processes)
    spec_at: dict[str, float] = {}
    report_at: dict[str, float] = {}
    for arrived, node, spec_active, active, reloaded in cluster.caches.since(start):
        if spec_active == target:
            spec_at.setdefault(node, arrived)
        if active == reloaded == target:
            report_at.setdefault(node, arrived)
    mv = cluster.versions.since(start)
    patch = min(t for t, _, b in mv if (b.get("spec") or {}).get("version") == target)
    status_first = min(
        (
            t
            for t, _, b in mv
            if ((b.get("status") or {}).get("rollout") or {}).get("target") == target
        ),
        default=float("nan"),
    )
    return Rollback(
        target=target,
        cli_exit=cli_exit,
        patch=patch - start,
        status_first=status_first - start,
        first_spec=min(spec_at.values()) - start,
        last_spec=max(spec_at.values()) - start,
        answers=[report_at[n] - spec_at[n] for n in cluster.nodes],
        specs=sorted(t - start for t in spec_at.values()),
        last_report=max(report_at.values()) - start,
        available=avail - start,
        mv_writes=sum(1 for t, _, _ in mv if patch < t <= avail),
        spec_writes=cluster.caches.writes(start, avail)[0],
        status_writes=cluster.caches.writes(start, avail)[1],
        cpu={k: cpu_after[k] - cpu_before[k] for k in cpu_before},
        requests={
            key: (
                count - requests_before.get(key, (0.0, 0.0))[0],
                seconds - requests_before.get(key, (0.0, 0.0))[1],
            )
            for key, (count, seconds) in requests_after.items()
        },
    )


# -- one fleet size ---------------------------------------------------------------------------
@dataclass
class SizeResult:
    nodes: int
    load: str  # the 1-minute load average before the size's rollbacks
    setup_v1: float
    setup_v2: float
    rollbacks: list[Rollback]


def run_size(count: int, args: argparse.Namespace, work: Path) -> SizeResult:
    """A fresh control plane, operator and simulated fleet of `count` nodes; the rollbacks."""
    work.mkdir(parents=True, exist_ok=True)
    processes: list[ManagedProcess] = []
    with contextlib.ExitStack() as stack:
        with progress_bars() as progress:
            task = progress.add_task(f"{count} nodes: starting kube-apiserver + etcd", total=None)
            kube = stack.enter_context(
                KubeControlPlane(toolchain=ensure_toolchain(), work_dir=work / "kube")
            )
            api = kube_config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
            stack.callback(api.close)
            custom = install_crds(api)
            core = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": NAMESPACE}})
            progress.update(
                task, description=f"{count} nodes: control plane up", total=1, completed=1
            )
            nodes = [f"gpu-{i:04d}" for i in range(count)]
            stack.callback(delete_nodes, core, custom, nodes)
            made = progress.add_task("Node objects", total=count)
            create_nodes(
                core,
                {n: {"pool": "bench"} for n in nodes},
                on_created=lambda: progress.advance(made),
            )

            env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "PYTHONUNBUFFERED": "1"}
            names = work / "nodes.txt"
            names.write_text("\n".join(nodes) + "\n")
            stack.callback(stop_processes, processes)
            agents = ManagedProcess(
                "simulated agents",
                [
                    sys.executable,
                    "-m",
                    "modelcache.testing.simagents",
                    "--kubeconfig",
                    str(kube.kubeconfig),
                    "--nodes-from",
                    str(names),
                    "--status-interval",
                    str(args.status_interval),
                ],
                log_path=work / "logs" / "agents.log",
                env=env,
                stop_grace=15,
            )
            processes.append(agents.start())
            operator = modelcache_process(
                "operator",
                ["operator", "--kubeconfig", str(kube.kubeconfig)],
                log_path=work / "logs" / "operator.log",
                env=env,
                stop_grace=15,
            )
            processes.append(operator.start())
            caches = CacheLog()
            cache_watch = Recorder(
                custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                NODE_CACHES,
                on_event=caches,
                keep=False,
            )
            stack.callback(cache_watch.stop)
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                NAMESPACE,
                MODEL_VERSIONS,
                {
                    "apiVersion": API_VERSION,
                    "kind": "ModelVersion",
                    "metadata": {"name": MODEL},
                    "spec": {
                        "source": {"url": f"oss://bench/{MODEL}"},
                        "version": "v1",
                        "nodeSelector": {"matchLabels": {"pool": "bench"}},
                        "rollout": {"canary": 1, "maxUnavailable": args.max_unavailable},
                        "reload": {"podSelector": {"matchLabels": {"app": "studio"}}, "port": 9},
                    },
                },
            )
            versions = Recorder(
                custom.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, MODEL_VERSIONS
            )
            stack.callback(versions.stop)
            cluster = Cluster(
                nodes=nodes,
                kube=kube,
                custom=custom,
                kubeconfig=kube.kubeconfig,
                operator=operator,
                agents=agents,
                kube_pids=[p.pid for p in kube.processes if p.pid is not None],
                caches=caches,
                versions=versions,
                processes=processes,
            )
            setup_v1 = roll_out(cluster, "v1", progress)
            setup_v2 = roll_out(cluster, "v2", progress)
        time.sleep(2.0)  # the operator's settling reconcile
        load = load_average()
        if args.py_spy is not None:  # a diagnosis: where the operator's CPU goes in the rollbacks
            spy = subprocess.Popen(
                [
                    str(args.py_spy),
                    "record",
                    "--pid",
                    str(operator.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--gil",
                    "--output",
                    str(work / "operator.py-spy.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(spy.wait, 30)
            stack.callback(spy.send_signal, signal.SIGINT)
            time.sleep(1.0)
        results = []
        target = "v1"
        for index in range(args.repeats):
            result = measure(cluster, target)
            results.append(result)
            console.print(
                f"{count} nodes, rollback {index + 1}/{args.repeats} to {target}: "
                f"Available {result.available:.3f} s after the command "
                f"({result.available - result.patch:.3f} s after the patch)"
            )
            target = "v2" if target == "v1" else "v1"
            time.sleep(2.0)
        console.print(f"{count} nodes: tearing down")
    return SizeResult(count, load, setup_v1, setup_v2, results)


# -- output -----------------------------------------------------------------------------------
def rows(result: SizeResult) -> list[tuple[str, float | str]]:
    """The breakdown of one size, medians over its rollbacks, in seconds."""
    med = statistics.median
    r = result.rollbacks
    return [
        ("command -> patch seen (CLI start, GET, PATCH)", med([x.patch for x in r])),
        ("  CLI process exited", med([x.cli_exit for x in r])),
        ("patch -> operator's 1st NodeCache write", med([x.first_spec - x.patch for x in r])),
        ("1st -> last NodeCache write", med([x.last_spec - x.first_spec for x in r])),
        ("  command -> half the nodes' specs written", med([_nth(x.specs, 0.5) for x in r])),
        ("  NodeCache writes per second (1st -> last)", med([_rate(x) for x in r])),
        ("patch -> MV status names target", med([x.status_first - x.patch for x in r])),
        ("agent: its spec -> its report, median", med([med(x.answers) for x in r])),
        ("agent: its spec -> its report, max", med([max(x.answers) for x in r])),
        ("last NodeCache write -> last report", med([x.last_report - x.last_spec for x in r])),
        ("last report -> Available", med([x.available - x.last_report for x in r])),
        ("patch -> Available", med([x.available - x.patch for x in r])),
        ("command -> Available", med([x.available for x in r])),
        (
            "  min / max over rollbacks",
            f"{min(x.available for x in r):.3f} / {max(x.available for x in r):.3f}",
        ),
        ("ModelVersion writes in the rollback", f"{med([x.mv_writes for x in r]):.0f}"),
        ("NodeCache spec writes (operator)", f"{med([x.spec_writes for x in r]):.0f}"),
        ("NodeCache status writes (agents)", f"{med([x.status_writes for x in r]):.0f}"),
        *(
            (
                f"API: {verb} {resource}{'/' + sub if sub else ''}: n, mean ms",
                f"{med([x.requests.get((verb, resource, sub), (0, 0))[0] for x in r]):.0f}, "
                f"{med([_mean_ms(x, (verb, resource, sub)) for x in r]):.1f}",
            )
            for verb, resource, sub in REQUESTS
        ),
        *(
            (f"CPU s, {name}", med([x.cpu[name] for x in r]))
            for name in ("operator", "kube-apiserver + etcd", "simulated agents")
        ),
    ]


def _wire(result: SizeResult) -> dict[str, Any]:
    """One size's figures as JSON (request keys joined: "PUT nodecaches/")."""
    body = dataclasses.asdict(result)
    for rollback, raw in zip(body["rollbacks"], result.rollbacks, strict=True):
        rollback["requests"] = {"/".join(k): v for k, v in raw.requests.items()}
    return body


def _mean_ms(rollback: Rollback, key: tuple[str, str, str]) -> float:
    count, seconds = rollback.requests.get(key, (0.0, 0.0))
    return 1000 * seconds / count if count else 0.0


def _nth(values: list[float], fraction: float) -> float:
    return values[min(int(len(values) * fraction), len(values) - 1)]


def _rate(rollback: Rollback) -> float:
    spread_s = rollback.last_spec - rollback.first_spec
    return (len(rollback.specs) - 1) / spread_s if spread_s > 0 else float("nan")


def print_results(results: list[SizeResult]) -> None:
    table = Table(title="modelcache rollback, seconds (medians over rollbacks)")
    table.add_column("", no_wrap=True)
    for result in results:
        table.add_column(f"{result.nodes} simulated", justify="right", no_wrap=True)
    table.add_column("6 real agents (docs)", justify="right", no_wrap=True)
    by_size = [dict(rows(r)) for r in results]
    real = {"patch -> Available": REAL_AGENTS_6["patch -> Available, median"]}
    for label, _ in rows(results[0]):
        cells = [by_size[i][label] for i in range(len(results))]
        docs = real.get(label)
        table.add_row(
            label,
            *(c if isinstance(c, str) else f"{c:.3f}" for c in cells),
            "" if docs is None else f"{docs:.3f}",
        )
    Console(width=max(console.width, 120), highlight=False).print(table)  # never squeezed
    console.print(
        "6 real agents: bench/rollback.py --nodes 6, 2026-12-05, 2-core AMD EPYC VM "
        "(docs/benchmarks.md 'Rollback across 500 nodes'); it times from the spec patch "
        "and includes each pod's reload POST"
    )
    for result in results:
        console.print(
            f"{result.nodes} nodes (load average {result.load} before the rollbacks): setup v1 "
            f"{result.setup_v1:.1f} s, v2 {result.setup_v2:.1f} s; "
            f"command -> Available {spread([x.available for x in result.rollbacks])} s"
        )
    big = max(results, key=lambda r: r.nodes)
    worst = max(x.available for x in big.rollbacks)
    verdict = "met" if worst < 10.0 else "NOT met"
    console.print(
        f"target: {big.nodes} nodes < 10 s from the command to Available: {verdict} "
        f"(max {worst:.3f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="6,500", help="fleet sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--status-interval", type=float, default=0.5, help="agents' (the default)")
    parser.add_argument(
        "--max-unavailable", default="100%", help="waves of the setup rollout of v2 only"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in DIR")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="py-spy binary: record the operator over the rollbacks (DIR/nN/operator.py-spy.txt)",
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    console.print(
        f"rollback across a fleet: {', '.join(map(str, sizes))} simulated nodes, "
        f"{args.repeats} rollbacks each"
    )
    console.print(f"machine: {machine()}; load average before: {load_average()}")
    console.print(
        f"simulated agents: real KubeAgent on a simulated disk, --status-interval "
        f"{args.status_interval}; {operator_pacing()}"
    )
    work = args.keep or Path(tempfile.mkdtemp(prefix="modelcache-rollback-fleet-"))
    results = []
    with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        if args.keep is None:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        for size in sizes:
            results.append(run_size(size, args, work / f"n{size}"))
        print_results(results)
        if args.json is not None:
            args.json.write_text(json.dumps([_wire(r) for r in results], indent=1))
    if args.keep is not None:
        console.print(f"logs kept in {work}")


if __name__ == "__main__":
    main()
