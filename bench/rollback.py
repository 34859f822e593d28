"""Fleet rollback to a cached version: seconds from the spec change to all flipped + reloaded.

Real parts on loopback: kube-apiserver + etcd, SeaweedFS, the CRDs from crds/,
the operator process, one `modelcache agent --node` process per Node object,
and per node one "inference pod" (a Pod object bound to the node whose
status.podIP is a loopback IP, with a small HTTP server on it answering the
reload call). Two versions are published and rolled out (v1, then v2), so both
are cached on every node; then spec.version is switched back and forth between
them (each switch goes to a version that was live before: a rollback, which the
planner flips on every node at once) and each switch is timed:
  - done: the spec patch -> the last node's `current` symlink flipped AND the
    last pod's endpoint received the reload (pod-side arrival times, and the
    agents' L2_FLIP records from ROOT/events.jsonl)
  - available: the patch -> the ModelVersion status says Available on it
with a breakdown of where the time went (the operator's first and last NodeCache
write as seen by a watch, the agents' flips, the reloads, the status reports).
Also prints each agent's RSS (VmRSS, and PSS) when idle.

Usage: .venv/bin/python bench/rollback.py [--nodes 6] [--repeats 3] [--rollout-max-unavailable 1]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _cluster import (
    Recorder,
    console,
    create_nodes,
    delete_nodes,
    load_average,
    machine,
    operator_pacing,
    proc_status_kib,
    progress_bars,
    pss_kib,
    sigterm_as_interrupt,
    spread,
    stop_processes,
    wait_for,
)
from _reload_endpoint import PodServer
from kubernetes import client
from kubernetes import config as kube_config
from rich.progress import Progress

from modelcache.agent.events import read_events
from modelcache.api.k8s import API_VERSION, GROUP, MODEL_VERSIONS, NODE_CACHES, VERSION
from modelcache.api.layout import event_log_path
from modelcache.testing import KubeControlPlane, ObjectStore, ensure_toolchain
from modelcache.testing.crds import install_crds
from modelcache.testing.fleet import bind_pod, modelcache_process, node_agent
from modelcache.testing.ports import free_port, is_listening
from modelcache.testing.process import ManagedProcess

BUCKET = "bench"
MODEL = "lora"
FILES = {"adapter.safetensors": 256 * 1024, "adapter_config.json": 600}


# -- the inference pods' reload endpoints -----------------------------------------------------


def pod_ip(index: int) -> str:
    """A distinct loopback address per node (all of 127/8 is loopback on Linux)."""
    return f"127.77.{index // 250}.{index % 250 + 2}"


# -- the fleet --------------------------------------------------------------------------------
@dataclass
class Fleet:
    namespace: str
    nodes: list[str]
    roots: dict[str, Path]
    pods: dict[str, PodServer]
    agents: dict[str, ManagedProcess]
    custom: client.CustomObjectsApi
    core: client.CoreV1Api
    processes: list[ManagedProcess] = field(default_factory=list)

    def current(self, node: str) -> str | None:
        link = self.roots[node] / "models" / self.namespace / MODEL / "current"
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return None

    def model_version(self) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, MODEL_VERSIONS, MODEL
        )
        return body

    def set_version(self, version: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, MODEL_VERSIONS, MODEL, {"spec": {"version": version}}
        )

    def serving(self, version: str) -> int:
        """Nodes serving `version` by the operator's count; all of them once it is Available."""
        status = self.model_version().get("status") or {}
        if status.get("phase") == "Available" and status.get("currentVersion") == version:
            return len(self.nodes)
        if ((status.get("rollout") or {}).get("target")) != version:
            return 0
        ready = int(str(status.get("ready") or "0/0").split("/")[0])
        return min(ready, len(self.nodes) - 1)  # not Available yet: never report "done"


def make_model(directory: Path, seed: int) -> Path:
    """Small deterministic files standing in for a LoRA: the rollback moves no bytes anyway."""
    rng = random.Random(seed)  # noqa: S311 - stand-in weights, not secrets
    directory.mkdir(parents=True, exist_ok=True)
    for name, size in FILES.items():
        (directory / name).write_bytes(rng.randbytes(size))
    return directory


def publish(directory: Path, url: str, version: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "modelcache", "publish", str(directory), url, "--version", version],
        env=env,
        check=True,
        capture_output=True,
    )


def start_pods(stack: contextlib.ExitStack, fleet: Fleet, port: int, progress: Progress) -> None:
    """One Pod object per node with a loopback podIP, and its reload endpoint on that IP."""
    core, namespace = fleet.core, fleet.namespace
    pods = progress.add_task("pods + reload endpoints", total=len(fleet.nodes))
    for index, node in enumerate(fleet.nodes):
        ip = pod_ip(index)
        server = PodServer((ip, port))
        threading.Thread(target=server.serve_forever, name=f"pod-{node}", daemon=True).start()
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        fleet.pods[node] = server
        bind_pod(core, namespace, f"studio-{index}", node=node, ip=ip, labels={"app": "studio"})
        progress.advance(pods)


def start_fleet(
    stack: contextlib.ExitStack, args: argparse.Namespace, work: Path, progress: Progress
) -> tuple[Fleet, str, int]:
    """Everything the rollbacks run on; each piece registers its own teardown on `stack`."""
    task = progress.add_task("building or finding kube-apiserver, etcd, weed", total=None)
    toolchain = ensure_toolchain()
    progress.update(task, description="starting kube-apiserver + etcd")
    kube = stack.enter_context(KubeControlPlane(toolchain=toolchain, work_dir=work / "kube"))
    progress.update(task, description="starting SeaweedFS")
    store = stack.enter_context(ObjectStore(weed=toolchain.weed, work_dir=work / "s3"))
    store.create_bucket(BUCKET)
    api = kube_config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    stack.callback(api.close)
    progress.update(task, description="installing CRDs")
    custom = install_crds(api)
    core = client.CoreV1Api(api)
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "OSS_ENDPOINT": store.endpoint,
        "PYTHONUNBUFFERED": "1",
    }
    url = f"oss://{BUCKET}/{MODEL}"
    for seed, version in enumerate(["v1", "v2"]):
        progress.update(task, description=f"publishing {version}")
        publish(make_model(work / "src" / version, seed), url, version, env)
    progress.update(task, description="namespace, nodes, pods", completed=1, total=1)

    namespace = "studio"
    core.create_namespace({"metadata": {"name": namespace}})
    nodes = [f"gpu-{i:03d}" for i in range(args.nodes)]
    fleet = Fleet(namespace, nodes, {}, {}, {}, custom, core)
    stack.callback(delete_nodes, core, custom, nodes)
    made = progress.add_task("Node objects", total=len(nodes))
    create_nodes(
        core,
        {n: {"pool": "bench"} for n in nodes},
        on_created=lambda: progress.advance(made),
    )

    port = free_port()
    start_pods(stack, fleet, port, progress)

    # Agents and the operator: stopped by PID, before the nodes are deleted (LIFO).
    stack.callback(stop_processes, fleet.processes)
    started = progress.add_task("agents listening", total=len(nodes))
    metrics: dict[str, int] = {}
    for node in nodes:
        fleet.roots[node] = work / "nodes" / node
        metrics[node] = free_port()
        agent = node_agent(
            node,
            fleet.roots[node],
            log_path=work / "logs" / f"agent-{node}.log",
            env=env,
            kubeconfig=kube.kubeconfig,
            metrics_port=metrics[node],
            status_interval=args.status_interval,
        )
        fleet.processes.append(agent)
        fleet.agents[node] = agent.start()

    def listening() -> bool:
        up = sum(is_listening(metrics[n]) for n in nodes)
        progress.update(started, completed=up)
        return up == len(nodes)

    wait_for(listening, "every agent serving metrics", fleet.processes, timeout=300, interval=0.5)
    operator = modelcache_process(
        "operator",
        ["operator", "--kubeconfig", str(kube.kubeconfig)],
        log_path=work / "logs" / "operator.log",
        env=env,
        stop_grace=15,
    )
    fleet.processes.append(operator.start())
    return fleet, url, port


def roll_out(fleet: Fleet, version: str, progress: Progress) -> float:
    """Set the version and wait until it is Available on every node (setup, not measured)."""
    task = progress.add_task(f"{version} rolling out (serving)", total=len(fleet.nodes))
    started = time.monotonic()
    fleet.set_version(version)

    def available() -> bool:
        serving = fleet.serving(version)
        progress.update(task, completed=serving)
        return serving == len(fleet.nodes)

    wait_for(available, f"{version} Available", fleet.processes, timeout=600, interval=0.25)
    return time.monotonic() - started


# -- one measured rollback --------------------------------------------------------------------
@dataclass
class Rollback:
    target: str
    done: float  # patch -> every node flipped and every pod reloaded
    available: float  # patch -> ModelVersion status Available on the target
    first_spec: float  # patch -> the first NodeCache spec naming the target (watch arrival)
    last_spec: float
    flips: list[float]  # patch -> each node's L2_FLIP
    reloads: list[float]  # patch -> each pod's reload arrival
    agent_lag: list[float]  # each node: its spec's watch arrival -> its L2_FLIP
    reload_lag: list[float]  # each node: L2_FLIP -> the pod's reload arrival
    before_post: list[float]  # each node: L2_FLIP -> the reload POST starts (the pod LIST)
    post: list[float]  # each node: the reload call's own duration (L1_RELOAD "seconds")
    reported: float  # patch -> the last NodeCache status reporting reloadedVersion = target
    status_first: float  # patch -> the first ModelVersion status naming the target


def _ts(record: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(record["ts"]).timestamp()


def _entry(body: dict[str, Any], part: str, namespace: str) -> dict[str, Any]:
    models = (body.get(part) or {}).get("models") or []
    return next(
        (m for m in models if (m.get("namespace"), m.get("name")) == (namespace, MODEL)), {}
    )


def _first(
    events: list[tuple[float, str, dict[str, Any]]], match: Callable[[dict[str, Any]], bool]
) -> dict[str, float]:
    """Per object name, the arrival time of its first event that matches."""
    seen: dict[str, float] = {}
    for arrived, _, body in events:
        name = body["metadata"]["name"]
        if name not in seen and match(body):
            seen[name] = arrived
    return seen


def measure(fleet: Fleet, target: str, caches: Recorder, versions: Recorder) -> Rollback:
    ns, nodes = fleet.namespace, fleet.nodes
    start = time.time()
    fleet.set_version(target)

    def reloaded(node: str) -> bool:
        return any(t >= start and v == target for t, v in fleet.pods[node].received)

    wait_for(
        lambda: all(fleet.current(n) == target and reloaded(n) for n in nodes),
        f"every node flipped to {target} and every pod reloaded",
        fleet.processes,
        interval=0.005,
    )

    def available(body: dict[str, Any]) -> bool:
        status = body.get("status") or {}
        return status.get("phase") == "Available" and status.get("currentVersion") == target

    wait_for(
        lambda: bool(_first(versions.since(start), available)),
        f"ModelVersion Available on {target}",
        fleet.processes,
        interval=0.01,
    )
    flips, reloads, before_post, post = {}, {}, {}, {}
    for node in nodes:
        records = read_events(event_log_path(fleet.roots[node]))
        flips[node] = min(
            _ts(r)
            for r in records
            if r["event"] == "L2_FLIP" and r["version"] == target and _ts(r) >= start - 0.002
        )
        call = next(
            r
            for r in records
            if r["event"] == "L1_RELOAD" and r["version"] == target and _ts(r) >= flips[node]
        )
        post[node] = float(call["seconds"])
        before_post[node] = _ts(call) - post[node] - flips[node]
        reloads[node] = min(t for t, v in fleet.pods[node].received if t >= start and v == target)
    specs = _first(caches.since(start), lambda b: _entry(b, "spec", ns).get("active") == target)
    reports = _first(
        caches.since(start),
        lambda b: _entry(b, "status", ns).get("reloadedVersion") == target,
    )
    mv = versions.since(start)
    status_first = _first(
        mv, lambda b: ((b.get("status") or {}).get("rollout") or {}).get("target") == target
    )
    # The operator may write a spec before this process's watch delivers it; the agent may
    # even see it first. Missing arrivals (should not happen) fall back to the flip time.
    spec_at = {n: specs.get(n, flips[n]) for n in nodes}
    return Rollback(
        target=target,
        done=max(*flips.values(), *reloads.values()) - start,
        available=min(_first(mv, available).values()) - start,
        first_spec=min(spec_at.values()) - start,
        last_spec=max(spec_at.values()) - start,
        flips=[flips[n] - start for n in nodes],
        reloads=[reloads[n] - start for n in nodes],
        agent_lag=[flips[n] - spec_at[n] for n in nodes],
        reload_lag=[reloads[n] - flips[n] for n in nodes],
        before_post=[before_post[n] for n in nodes],
        post=[post[n] for n in nodes],
        reported=max(reports.get(n, float("nan")) for n in nodes) - start,
        status_first=min(status_first.values(), default=float("nan")) - start,
    )


def read_cost(fleet: Fleet, repeats: int = 5) -> float:
    """What one operator reconcile reads (the ModelVersion, selected Nodes, all NodeCaches)."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        fleet.model_version()
        fleet.core.list_node(label_selector="pool=bench")
        fleet.custom.list_cluster_custom_object(GROUP, VERSION, NODE_CACHES)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


# -- output -----------------------------------------------------------------------------------
def print_memory(fleet: Fleet) -> None:
    rss = [proc_status_kib(p.pid, "VmRSS") for p in fleet.agents.values() if p.pid]
    pss = [pss_kib(p.pid) for p in fleet.agents.values() if p.pid]
    rss_mb = [r / 1024 for r in rss if r is not None]
    pss_mb = [p / 1024 for p in pss if p is not None]
    console.print(
        f"agent memory, idle ({len(rss_mb)} agents), MB: VmRSS {_mb(rss_mb)}; PSS {_mb(pss_mb)}"
    )
    operator = fleet.processes[-1]
    if operator.pid:
        op = proc_status_kib(operator.pid, "VmRSS")
        console.print(f"operator memory: VmRSS {op / 1024 if op else float('nan'):.0f} MB")


def _mb(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"min {min(values):.0f}  median {statistics.median(values):.0f}  max {max(values):.0f}"


def print_results(results: list[Rollback], nodes: int, reads: float) -> None:
    console.print()
    console.print(f"rollbacks to a cached version, {nodes} nodes, seconds after the spec patch:")
    console.print(
        f"{'#':>2} {'to':>3} {'done':>7} {'avail':>7} {'1st spec':>9} {'last spec':>9} "
        f"{'1st flip':>9} {'last flip':>9} {'last reload':>11} {'last report':>11}"
    )
    for index, r in enumerate(results, 1):
        console.print(
            f"{index:>2} {r.target:>3} {r.done:7.3f} {r.available:7.3f} {r.first_spec:9.3f} "
            f"{r.last_spec:9.3f} {min(r.flips):9.3f} {max(r.flips):9.3f} {max(r.reloads):11.3f} "
            f"{r.reported:11.3f}"
        )
    done = [r.done for r in results]
    console.print(f"every agent flipped + every pod reloaded: {spread(done)} s")
    console.print(
        f"ModelVersion status Available:            {spread([r.available for r in results])} s"
    )
    console.print("breakdown (medians over rollbacks; per-node figures: median / max over nodes):")
    med = statistics.median
    rows = [
        ("patch -> operator's 1st NodeCache write (watch)", [r.first_spec for r in results]),
        ("1st -> last NodeCache write", [r.last_spec - r.first_spec for r in results]),
        ("patch -> ModelVersion status names target", [r.status_first for r in results]),
        ("node: spec arrival -> L2_FLIP, median", [med(r.agent_lag) for r in results]),
        ("node: spec arrival -> L2_FLIP, max", [max(r.agent_lag) for r in results]),
        ("node: L2_FLIP -> pod reload arrival, median", [med(r.reload_lag) for r in results]),
        ("node: L2_FLIP -> pod reload arrival, max", [max(r.reload_lag) for r in results]),
        (
            "  of which L2_FLIP -> POST starts (pod LIST), median",
            [med(r.before_post) for r in results],
        ),
        ("  of which the POST itself, median", [med(r.post) for r in results]),
        ("last reload -> last status report", [r.reported - max(r.reloads) for r in results]),
        ("last status report -> Available", [r.available - r.reported for r in results]),
    ]
    for label, values in rows:
        console.print(f"  {label:48} {med(values):7.3f}")
    console.print(
        f"  {'GET MV + LIST Nodes + NodeCaches':48} {reads:7.3f}  "
        "(from this process; the operator reads its watch indexes instead)"
    )
    # The fan-out still grows with N (16 writes in flight at a time, each a round trip).
    per_write = med([(r.last_spec - r.first_spec) / max(nodes - 1, 1) for r in results])
    tail = med([r.done - r.last_spec for r in results])
    at_500 = med([r.first_spec for r in results]) + per_write * 499 + tail
    console.print(
        f"NodeCache writes: first to last {1000 * per_write:.1f} ms per node; linear "
        f"extrapolation to 500 nodes: ~{at_500:.1f} s (not measured)"
    )
    if nodes == 6:
        verdict = "met" if max(done) < 1.0 else "NOT met"
        console.print(f"target (6 nodes): < 1 s: {verdict} (max {max(done):.3f} s)")
    elif nodes < 6:
        console.print(f"target: < 1 s at 6 nodes; {nodes} nodes: max {max(done):.3f} s")
    else:
        console.print(
            f"targets: < 1 s at 6 nodes, < 10 s at 500; {nodes} nodes: max {max(done):.3f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="measured rollbacks (default 3)")
    parser.add_argument(
        "--rollout-max-unavailable",
        default="1",
        help="spec.rollout.maxUnavailable for the setup rollouts (a rollback flips all at once)",
    )
    parser.add_argument("--status-interval", type=float, default=0.2, help="agents' status pace")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and caches in DIR")
    args = parser.parse_args()
    max_unavailable: int | str = (
        int(args.rollout_max_unavailable)
        if args.rollout_max_unavailable.isdigit()
        else args.rollout_max_unavailable
    )

    console.print(f"rollback benchmark: {args.nodes} nodes, {args.repeats} rollbacks")
    console.print(f"machine: {machine()}; load average before: {load_average()}")
    console.print(f"agents: --status-interval {args.status_interval}; {operator_pacing()}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="modelcache-rollback-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[Rollback] = []
    with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        if args.keep is None:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        with progress_bars() as progress:
            fleet, url, port = start_fleet(stack, args, work, progress)
            fleet.custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                fleet.namespace,
                MODEL_VERSIONS,
                {
                    "apiVersion": API_VERSION,
                    "kind": "ModelVersion",
                    "metadata": {"name": MODEL},
                    "spec": {
                        "source": {"url": url},
                        "version": "v1",
                        "nodeSelector": {"matchLabels": {"pool": "bench"}},
                        "rollout": {"canary": 1, "maxUnavailable": max_unavailable},
                        "reload": {
                            "podSelector": {"matchLabels": {"app": "studio"}},
                            "port": port,
                        },
                    },
                },
            )
            first = roll_out(fleet, "v1", progress)
            second = roll_out(fleet, "v2", progress)
        console.print(
            f"setup: v1 pulled + flipped everywhere in {first:.1f} s; v2 rolled out "
            f"(canary 1, maxUnavailable {max_unavailable}) in {second:.1f} s"
        )
        time.sleep(2.0)  # let the agents go idle before reading their memory
        print_memory(fleet)
        caches = Recorder(fleet.custom.list_cluster_custom_object, GROUP, VERSION, NODE_CACHES)
        versions = Recorder(
            fleet.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            fleet.namespace,
            MODEL_VERSIONS,
        )
        stack.callback(caches.stop)
        stack.callback(versions.stop)
        target = "v1"
        for index in range(args.repeats):
            result = measure(fleet, target, caches, versions)
            results.append(result)
            console.print(
                f"rollback {index + 1}/{args.repeats} to {target}: every node flipped + "
                f"reloaded in {result.done:.3f} s, Available in {result.available:.3f} s"
            )
            target = "v2" if target == "v1" else "v1"
            time.sleep(1.0)  # the operator's settling reconcile, then the next one
        reads = read_cost(fleet)
        print_results(results, args.nodes, reads)
        console.print("tearing down (processes by PID, then nodes, then the control plane)")
    if args.keep is not None:
        console.print(f"logs and caches kept in {work}")


if __name__ == "__main__":
    main()
