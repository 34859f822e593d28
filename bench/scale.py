"""The operator at scale: 500 Nodes x 20 ModelVersions reconciled, and the operator's memory.

A real kube-apiserver + etcd, the CRDs, N Node objects whose labels (zone, gpu,
pool) let each of M ModelVersions select all nodes or a subset, and the operator
process; no agents, so nothing pulls and every rollout stays in Prefetching.
Timed: from creating the ModelVersions until every NodeCache spec holds every
entry it should (each selected node an entry for each ModelVersion selecting
it), seen by a watch and checked by a final LIST. Sampled: the operator's VmRSS
(peak of 10 Hz samples, and the kernel's VmHWM) and the CPU time it and the API
server spent; then a settle period shows what the operator costs once done.

Usage: .venv/bin/python bench/scale.py [--nodes 500] [--models 20] [--settle 15]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _cluster import (
    PeakRss,
    Recorder,
    console,
    cpu_seconds,
    create_nodes,
    delete_nodes,
    load_average,
    machine,
    operator_pacing,
    proc_status_kib,
    progress_bars,
    sigterm_as_interrupt,
    spread,
    stop_processes,
    wait_for,
)
from kubernetes import client
from kubernetes import config as kube_config

from modelcache.api.k8s import API_VERSION, GROUP, MODEL_VERSIONS, NODE_CACHES, VERSION
from modelcache.testing import KubeControlPlane, ensure_toolchain
from modelcache.testing.crds import install_crds
from modelcache.testing.fleet import modelcache_process
from modelcache.testing.process import ManagedProcess

NAMESPACE = "studio"
ZONES = ["z0", "z1", "z2", "z3"]
GPUS = ["a100", "h100", "l40s"]
POOLS = [f"p{i}" for i in range(10)]


def node_labels(count: int) -> dict[str, dict[str, str]]:
    """Labels spread so selectors pick everything, a quarter, a third, a tenth, a twelfth."""
    return {
        f"gpu-{i:04d}": {
            "fleet": "bench",
            "zone": ZONES[i % len(ZONES)],
            "gpu": GPUS[i % len(GPUS)],
            "pool": POOLS[i % len(POOLS)],
        }
        for i in range(count)
    }


def selector(index: int) -> dict[str, str]:
    """ModelVersion `index`'s matchLabels: one of five shapes, rotating."""
    shape = index % 5
    if shape == 0:
        return {"fleet": "bench"}
    if shape == 1:
        return {"zone": ZONES[index % len(ZONES)]}
    if shape == 2:
        return {"gpu": GPUS[index % len(GPUS)]}
    if shape == 3:
        return {"pool": POOLS[index % len(POOLS)]}
    return {"zone": ZONES[index % len(ZONES)], "gpu": GPUS[index % len(GPUS)]}


def model_version(index: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": f"model-{index:02d}"},
        "spec": {
            "source": {"url": f"oss://bench/model-{index:02d}"},
            "version": "v1",
            "nodeSelector": {"matchLabels": selector(index)},
            "rollout": {"canary": 1, "maxUnavailable": "10%"},
        },
    }


def entries(body: dict[str, Any]) -> set[str]:
    models = (body.get("spec") or {}).get("models") or []
    return {f"{m.get('namespace')}/{m.get('name')}" for m in models}


class Progressing:
    """Counts missing entries (overall and per ModelVersion) as NodeCache events arrive."""

    def __init__(self, expected: dict[str, set[str]]) -> None:
        self.expected = expected
        self.have: dict[str, set[str]] = {node: set() for node in expected}
        self.total = sum(len(wanted) for wanted in expected.values())
        self.present_count = 0
        self.missing_by_model: Counter[str] = Counter(
            name for wanted in expected.values() for name in wanted
        )
        self.model_done: dict[str, float] = {}
        self.writes = 0
        self.first_write: float | None = None
        self.done_at: float | None = None
        self.marks: dict[int, float] = {}  # percent of entries present -> arrival time
        self._lock = threading.Lock()

    def __call__(self, arrived: float, body: dict[str, Any]) -> None:
        node = body["metadata"]["name"]
        if node not in self.expected:
            return
        with self._lock:
            self.writes += 1
            have = entries(body) & self.expected[node]
            if self.first_write is None and have:
                self.first_write = arrived
            for name in have - self.have[node]:
                self.missing_by_model[name] -= 1
                if self.missing_by_model[name] == 0:
                    self.model_done.setdefault(name, arrived)
            for name in self.have[node] - have:
                self.missing_by_model[name] += 1
            self.present_count += len(have) - len(self.have[node])
            self.have[node] = have
            for percent in (50, 90, 100):
                if percent not in self.marks and self.present_count * 100 >= percent * self.total:
                    self.marks[percent] = arrived
            if self.present_count == self.total and self.done_at is None:
                self.done_at = arrived

    @property
    def present(self) -> int:
        with self._lock:
            return self.present_count


def operator_ready(custom: client.CustomObjectsApi) -> bool:
    """kopf writes itself into the peering object's status once it runs (and watches)."""
    try:
        body = custom.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", "modelcache"
        )
    except client.exceptions.ApiException:
        return False
    return bool(body.get("status"))


def verify(custom: client.CustomObjectsApi, expected: dict[str, set[str]]) -> tuple[int, int, int]:
    """A final LIST: (entries present, missing, extra) against what the selectors say."""
    listed = custom.list_cluster_custom_object(GROUP, VERSION, NODE_CACHES)
    held = {item["metadata"]["name"]: entries(item) for item in listed["items"]}
    present = missing = extra = 0
    for node, wanted in expected.items():
        have = held.get(node, set())
        present += len(wanted & have)
        missing += len(wanted - have)
        extra += len(have - wanted)
    return present, missing, extra


def log_counts(operator: ManagedProcess) -> Counter[str]:
    """What the operator's log says went wrong, by kind."""
    counts: Counter[str] = Counter()
    try:
        text = operator.log_path.read_text(errors="replace")
    except OSError:
        return counts
    for line in text.splitlines():
        for needle in ("conflicting writes", "Traceback", "reconcile failed", "ERROR", "WARNING"):
            if needle in line:
                counts[needle] += 1
    return counts


# A what-if, not the shipped operator: the same handlers with kopf's sync-handler pool resized.
WHAT_IF = """
import logging, sys
from pathlib import Path
import kopf
from modelcache.operator import handlers  # noqa: F401 - registers the handlers
from modelcache.operator.run import run_operator

@kopf.on.startup()
def _pool(settings: kopf.OperatorSettings, **_: object) -> None:
    settings.execution.max_workers = int(sys.argv[2])

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
run_operator(kubeconfig=Path(sys.argv[1]))
"""


def operator_process(kubeconfig: Path, work: Path, max_workers: int | None) -> ManagedProcess:
    """`modelcache operator`, or with --max-workers the what-if wrapper around the same code."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    if max_workers is None:
        return modelcache_process(
            "operator",
            ["operator", "--kubeconfig", str(kubeconfig)],
            log_path=work / "logs" / "operator.log",
            env=env,
            stop_grace=15,
        )
    return ManagedProcess(
        "operator (what-if)",
        [sys.executable, "-c", WHAT_IF, str(kubeconfig), str(max_workers)],
        log_path=work / "logs" / "operator.log",
        env=env,
        stop_grace=15,
    )


def phases(custom: client.CustomObjectsApi) -> Counter[str]:
    """ModelVersions by status phase ("none": the operator never wrote a status)."""
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, MODEL_VERSIONS)
    return Counter(
        str((item.get("status") or {}).get("phase") or "none") for item in listed["items"]
    )


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def main() -> None:  # noqa: PLR0915 - a benchmark reads best top to bottom
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds watched after")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up (and report) after")
    parser.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="what-if: run the same handlers with kopf's sync-handler thread pool at this size",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in DIR")
    args = parser.parse_args()

    labels = node_labels(args.nodes)
    selectors = {f"model-{j:02d}": selector(j) for j in range(args.models)}
    expected = {
        node: {
            f"{NAMESPACE}/{name}"
            for name, wanted in selectors.items()
            if all(have.get(k) == v for k, v in wanted.items())
        }
        for node, have in labels.items()
    }
    expected = {node: wanted for node, wanted in expected.items() if wanted}
    total = sum(len(w) for w in expected.values())
    console.print(
        f"scale benchmark: {args.nodes} nodes x {args.models} ModelVersions, no agents; "
        f"{total} NodeCache entries expected on {len(expected)} NodeCaches"
    )
    console.print(f"machine: {machine()}; load average before: {load_average()}")
    pool = (
        f"kopf sync-handler pool: {args.max_workers} threads (WHAT-IF, not the shipped operator)"
        if args.max_workers
        else f"kopf sync-handler pool: default ({min(32, (os.cpu_count() or 1) + 4)} threads here)"
    )
    console.print(f"{operator_pacing()}; {pool}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="modelcache-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    processes: list[ManagedProcess] = []
    with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        if args.keep is None:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        with progress_bars() as progress:
            task = progress.add_task("starting kube-apiserver + etcd", total=None)
            toolchain = ensure_toolchain()
            kube = stack.enter_context(
                KubeControlPlane(toolchain=toolchain, work_dir=work / "kube")
            )
            api = kube_config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
            stack.callback(api.close)
            progress.update(task, description="installing CRDs")
            custom = install_crds(api)
            core = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": NAMESPACE}})
            progress.update(task, description="control plane up", completed=1, total=1)
            stack.callback(delete_nodes, core, custom, list(labels))
            made = progress.add_task("Node objects", total=len(labels))
            started = time.monotonic()
            create_nodes(core, labels, on_created=lambda: progress.advance(made))
            node_seconds = time.monotonic() - started

            operator = operator_process(kube.kubeconfig, work, args.max_workers)
            stack.callback(stop_processes, processes)
            processes.append(operator.start())
            assert operator.pid is not None
            ready = progress.add_task("operator running (kopf peering)", total=None)
            wait_for(lambda: operator_ready(custom), "operator up", processes, timeout=120)
            progress.update(ready, completed=1, total=1)
            time.sleep(2.0)  # let kopf's initial Node listing (one event per Node) drain
            idle_rss = proc_status_kib(operator.pid, "VmRSS") or 0

            tracker = Progressing(expected)
            recorder = Recorder(
                custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                NODE_CACHES,
                on_event=tracker,
                keep=False,
            )
            stack.callback(recorder.stop)
            sampler = PeakRss(operator.pid).start()
            apiserver = [p.pid for p in kube.processes if p.pid is not None]
            cpu_before = cpu_seconds(operator.pid) or 0.0
            cpu_kube_before = sum(cpu_seconds(pid) or 0.0 for pid in apiserver)
            t0 = time.time()
            for index in range(args.models):
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, MODEL_VERSIONS, model_version(index)
                )
            created = time.time() - t0
            entries_task = progress.add_task("NodeCache entries", total=total)

            def reconciled() -> bool:
                progress.update(entries_task, completed=tracker.present)
                return tracker.done_at is not None

            with contextlib.suppress(TimeoutError):
                wait_for(reconciled, "every entry in place", processes, timeout=args.timeout)
        finished = tracker.done_at is not None
        window = (tracker.done_at or time.time()) - t0
        cpu_done = (cpu_seconds(operator.pid) or 0.0) - cpu_before
        cpu_kube_done = sum(cpu_seconds(pid) or 0.0 for pid in apiserver) - cpu_kube_before
        peak_done = sampler.peak_kib
        writes_done = tracker.writes
        status_phases = phases(custom)
        operator_threads = threads(operator.pid)

        console.print(f"settling for {args.settle:.0f} s (the operator keeps running)")
        cpu_mark = cpu_seconds(operator.pid) or 0.0
        cpu_kube_mark = sum(cpu_seconds(pid) or 0.0 for pid in apiserver)
        time.sleep(args.settle)
        cpu_settle = (cpu_seconds(operator.pid) or 0.0) - cpu_mark
        cpu_kube_settle = sum(cpu_seconds(pid) or 0.0 for pid in apiserver) - cpu_kube_mark
        peak = sampler.stop()
        hwm = proc_status_kib(operator.pid, "VmHWM") or 0
        end_rss = proc_status_kib(operator.pid, "VmRSS") or 0
        present, missing, extra = verify(custom, expected)
        counts = log_counts(operator)

        console.print()
        console.print(
            f"{args.nodes} nodes x {args.models} ModelVersions: {total} entries on "
            f"{len(expected)} NodeCaches (Nodes created in {node_seconds:.1f} s)"
        )
        console.print(f"  created the ModelVersions in            {created:8.2f} s")
        first = (tracker.first_write or t0) - t0
        console.print(f"  first NodeCache entry seen after        {first:8.2f} s")
        for percent, at in sorted(tracker.marks.items()):
            console.print(f"  {percent:3d}% of entries in place after        {at - t0:8.2f} s")
        if finished:
            console.print(f"  reconciled (every entry in place) after {window:8.2f} s")
        else:
            console.print(
                f"  NOT reconciled after {window:.0f} s: {tracker.present}/{total} entries; "
                f"{len(tracker.model_done)}/{args.models} ModelVersions complete"
            )
        done_times = sorted(at - t0 for at in tracker.model_done.values())
        if done_times:
            console.print(
                f"  per ModelVersion, all its entries in place: {spread(done_times)} s "
                f"({len(done_times)} of {args.models})"
            )
        console.print(
            "  ModelVersion status phases: "
            + ", ".join(f"{k} {v}" for k, v in sorted(status_phases.items()))
        )
        console.print(f"  final LIST: {present} present, {missing} missing, {extra} extra")
        console.print(f"  NodeCache writes seen by the watch:     {writes_done:8d}")
        console.print(
            f"  operator CPU in that window:            {cpu_done:8.2f} s "
            f"({100 * cpu_done / max(window, 1e-9):.0f}% of one core); kube-apiserver + etcd "
            f"{cpu_kube_done:.2f} s; operator threads {operator_threads}"
        )
        console.print(
            f"  operator CPU in the settle ({args.settle:.0f} s):       {cpu_settle:8.2f} s "
            f"({100 * cpu_settle / args.settle:.0f}% of one core); kube-apiserver + etcd "
            f"{cpu_kube_settle:.2f} s; NodeCache writes {tracker.writes - writes_done}"
        )
        console.print(
            f"  operator VmRSS: idle before {idle_rss / 1024:.0f} MB; peak in the window "
            f"{peak_done / 1024:.0f} MB; peak incl. settle {peak / 1024:.0f} MB "
            f"({sampler.samples} samples); VmHWM {hwm / 1024:.0f} MB; "
            f"at end {end_rss / 1024:.0f} MB"
        )
        if counts:
            console.print(
                "  operator log: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
            )
        ok = missing == 0 and extra == 0
        memory_ok = max(peak, hwm) < 300 * 1024
        console.print(
            f"target: reconciled: {'met' if ok else 'NOT met'}; operator memory < 300 MB: "
            f"{'met' if memory_ok else 'NOT met'} (peak {max(peak, hwm) / 1024:.0f} MB)"
        )
        console.print("tearing down (the operator by PID, then the nodes, then the control plane)")
    if args.keep is not None:
        console.print(f"logs kept in {work}")


if __name__ == "__main__":
    main()
