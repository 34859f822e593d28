"""The operator's CPU on a real, idle cluster: kubelets heartbeat, nothing else happens.

Real kubelets update their Node's status and lease every few seconds. Those updates must
not wake every ModelVersion's reconcile. This starts the e2e cluster (2 kubelet nodes by
default), installs the chart, and measures both operator pods' CPU over a window,
side by side:
  - baseline: no ModelVersion at all (kopf's watches alone, the same Node traffic);
  - settled: M ModelVersions, every one READY on every node, then left alone.
It also counts the Node events the API server sent in each window.

Needs root (it builds a cluster with kubelets, like `make e2e`).
Usage: .venv/bin/python bench/cluster_idle.py [--nodes 2] [--models 20] [--window 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _cluster import console, cpu_seconds, load_average, machine, sigterm_as_interrupt, wait_for
from kubernetes import client, watch
from kubernetes import config as kube_config
from urllib3.exceptions import ProtocolError

from modelcache.api.k8s import GROUP, MODEL_VERSIONS, VERSION
from modelcache.sources import Credentials, open_source, publish
from modelcache.testing import hostnet
from modelcache.testing.cluster import KubeletCluster
from modelcache.testing.objectstore import ACCESS_KEY, SECRET_KEY, ObjectStore

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "studio"


class NodeEvents:
    """Counts the Node watch events the API server sends (what kopf's Node watch receives)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.count = 0
        self._watch = watch.Watch()
        core = client.CoreV1Api(api)
        version = core.list_node().metadata.resource_version
        self._thread = threading.Thread(
            target=self._run, args=(core, version), daemon=True, name="node-events"
        )
        self._thread.start()

    def _run(self, core: client.CoreV1Api, version: str) -> None:
        with contextlib.suppress(ProtocolError, OSError):  # the cluster went away first
            for _ in self._watch.stream(core.list_node, resource_version=version):
                self.count += 1

    def stop(self) -> None:
        self._watch.stop()


def operator_pids() -> dict[str, int]:
    """Pod hostname -> PID of each operator process, found in the nodes' cgroups."""
    found: dict[str, int] = {}
    for group in hostnet.our_cgroups():
        if group.parent.name == "pids" or "pids" not in group.parts:
            continue
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"operator" in cmdline and any(b"modelcache" in c for c in cmdline):
                host = next(
                    (e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"HOSTNAME=")),
                    str(pid),
                )
                found[host] = pid
    return found


def leader(api: client.ApiClient) -> str:
    peers = client.CustomObjectsApi(api).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "modelcache"
    )
    ranked = sorted(
        (peers.get("status") or {}).items(), key=lambda kv: kv[1]["priority"], reverse=True
    )
    return ranked[0][0].split("@", 1)[-1].split("/", 1)[0] if ranked else "?"


def measure(api: client.ApiClient, window: float) -> dict[str, float]:
    """CPU % of a core per operator pod over `window` seconds, and Node events per second."""
    pids = operator_pids()
    before = {host: cpu_seconds(pid) or 0.0 for host, pid in pids.items()}
    events = NodeEvents(api)
    started = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - started
    events.stop()
    after = {host: cpu_seconds(pid) or 0.0 for host, pid in pids.items()}
    lead = leader(api)
    out = {"node_events_per_s": events.count / elapsed}
    for host in pids:
        role = "leader" if host == lead else "standby"
        out[f"{role}_cpu_pct"] = 100 * (after[host] - before[host]) / elapsed
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    console.print(f"machine: {machine()}; load before: {load_average()}")
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory() as tmp:
        cluster = KubeletCluster(
            nodes=args.nodes, studio=False, report=lambda m: console.print(f"  {m}")
        )
        cluster.start()
        store = ObjectStore(host=hostnet.HOST_ADDRESS, work_dir=Path(tmp) / "s3")
        try:
            store.start()
            store.create_bucket("idle")
            model = Path(tmp) / "model"
            model.mkdir()
            (model / "adapter.bin").write_bytes(b"\1" * 4096)
            credentials = Credentials(
                endpoint=store.endpoint, access_key_id=ACCESS_KEY, access_key_secret=SECRET_KEY
            )
            publish(open_source("s3://idle/lora", credentials), model, "v1")
            api = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))
            core = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": NAMESPACE}})
            core.create_namespaced_secret(NAMESPACE, store.credentials_secret("store"))
            assert cluster.toolchain is not None
            allowed = json.dumps({NAMESPACE: ["store"]})
            install = ["install", "mc", str(REPO / "helm/modelcache"), "-n", "modelcache-system"]
            install += ["--create-namespace", "--set", "image.pullPolicy=Never", "--wait"]
            install += ["--set-json", f"agent.credentialsSecrets={allowed}"]
            subprocess.run(
                [str(cluster.toolchain.helm), f"--kubeconfig={cluster.kubeconfig}", *install],
                check=True,
                capture_output=True,
            )
            console.print(f"chart installed; settling {args.window:.0f} s before the baseline")
            time.sleep(20)
            baseline = measure(api, args.window)

            custom = client.CustomObjectsApi(api)
            for i in range(args.models):
                custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    MODEL_VERSIONS,
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "ModelVersion",
                        "metadata": {"name": f"lora-{i:02d}"},
                        "spec": {
                            "source": {
                                "url": "s3://idle/lora",
                                "credentialsSecret": {"name": "store"},
                            },
                            "version": "v1",
                        },
                    },
                )
            want = f"{args.nodes}/{args.nodes}"

            def all_ready() -> bool:
                items = custom.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, MODEL_VERSIONS
                )["items"]
                return (
                    sum((i.get("status") or {}).get("ready") == want for i in items) == args.models
                )

            took = wait_for(all_ready, f"{args.models} ModelVersions READY {want}", timeout=300)
            console.print(
                f"{args.models} ModelVersions READY {want} in {took:.1f} s; settling 35 s"
            )
            time.sleep(35)  # past the 30 s settled interval: every loop is asleep
            settled = measure(api, args.window)
        finally:
            store.stop()
            cluster.stop()
    console.print(
        f"\noperator CPU, % of one core, over {args.window:.0f} s idle, {args.nodes} kubelet nodes"
    )
    console.print(f"{'':32}{'leader':>10}{'standby':>10}{'Node events/s':>16}")
    for label, row in (
        ("baseline: no ModelVersion", baseline),
        (f"settled: {args.models} ModelVersions", settled),
    ):
        console.print(
            f"{label:32}{row.get('leader_cpu_pct', 0):>9.2f}%{row.get('standby_cpu_pct', 0):>9.2f}%"
            f"{row['node_events_per_s']:>16.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
