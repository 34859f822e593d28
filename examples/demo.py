"""`make demo`: modelcache end to end on this machine, on real parts, in about two minutes.

Starts a real kube-apiserver + etcd and a SeaweedFS S3 store on loopback, then:
1. one GPU server without Kubernetes: publish two versions of a model, `use` v1,
   `use` v2 (only the changed file is downloaded), `rollback` (a flip, no download);
2. a cluster: the operator and three node agents (local processes, one cache dir
   each); apply a ModelVersion, watch READY reach 3/3, roll out v2 (canary, then
   waves), roll back with `modelcache rollback -n`;
3. the studio (examples/studio): a tiny SDXL-like generator whose LoRA the runtime swaps
   in GPU (here CPU) memory while designers keep generating: v1 -> v2 -> rollback, driven
   by a standalone agent. Everything is stopped at the end.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from kubernetes import client, config
from rich.console import Console
from rich.table import Table

from modelcache.api import API_VERSION, GROUP, MODEL_VERSIONS, NODE_CACHES, VERSION, event_log_path
from modelcache.testing import KubeControlPlane, ObjectStore, ensure_toolchain
from modelcache.testing.crds import install_crds
from modelcache.testing.fleet import modelcache_process, node_agent
from modelcache.testing.ports import free_port
from modelcache.testing.process import ManagedProcess

console = Console()
ROOT = Path(__file__).resolve().parents[1]
NODES = ["gpu-01", "gpu-02", "gpu-03"]


def sh(env: dict[str, str], *args: str) -> str:
    """Run a modelcache command and show it, as a person would type it."""
    console.print(f"[bold cyan]$ modelcache {' '.join(args)}[/]")
    done = subprocess.run(
        [sys.executable, "-m", "modelcache", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = (done.stdout + done.stderr).strip()
    if output:
        console.print(output, markup=False, highlight=False)
    if done.returncode != 0:
        raise SystemExit(f"demo step failed: modelcache {' '.join(args)}")
    return done.stdout


def make_model(directory: Path, lora_seed: int) -> Path:
    generator = random.Random(7)  # noqa: S311 - demo data
    files = {"unet/48.safetensors": 6 * 2**20, "vae/config.json": 700, "tokenizer/vocab.txt": 4000}
    for relative, size in files.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_bytes(generator.randbytes(size))
    lora = random.Random(lora_seed).randbytes(2 * 2**20)  # noqa: S311
    (directory / "lora/20.safetensors").parent.mkdir(parents=True, exist_ok=True)
    (directory / "lora/20.safetensors").write_bytes(lora)
    return directory


def one_server(env: dict[str, str], work: Path, url: str) -> None:
    console.rule("[bold]1. one GPU server, no Kubernetes")
    env = {**env, "MODELCACHE_ROOT": str(work / "server-cache")}
    sh(env, "publish", str(make_model(work / "v1", 1)), url, "--version", "v1")
    sh(env, "publish", str(make_model(work / "v2", 2)), url, "--version", "v2")
    sh(env, "versions", url)
    sh(env, "use", "studio/sdxl", "v1", "--source", url)
    sh(env, "use", "studio/sdxl", "v2")
    events = [
        json.loads(line) for line in event_log_path(work / "server-cache").read_text().splitlines()
    ]
    fetched = [e["file"] for e in events if e["event"] == "L3_FETCH" and e["version"] == "v2"]
    console.print(f"[green]v2 downloaded only what changed:[/] {fetched}")
    started = time.monotonic()
    sh(env, "rollback", "studio/sdxl")
    console.print(
        f"[green]rollback took {time.monotonic() - started:.2f}s (a symlink flip, no download)"
    )
    sh(env, "ls")


def kubectl_get(kubectl: Path, env: dict[str, str]) -> None:
    out = subprocess.run(
        [str(kubectl), "get", "mv", "-n", "studio"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    console.print(out.rstrip(), markup=False, highlight=False)


def node_table(api: client.CustomObjectsApi) -> Table:
    table = Table("NODE", "HOLDS", "SPEC ACTIVE", "SERVING", box=None)
    for node in NODES:
        cache = api.get_cluster_custom_object(GROUP, VERSION, NODE_CACHES, node)
        spec = (cache.get("spec") or {}).get("models") or [{}]
        status = ((cache.get("status") or {}).get("models") or [{}])[0]
        held = [v["version"] for v in status.get("versions", []) if v["state"] == "Cached"]
        table.add_row(
            node, ",".join(held), str(spec[0].get("active")), str(status.get("reloadedVersion"))
        )
    return table


def wait_phase(api: client.CustomObjectsApi, version: str, show: bool = False) -> float:
    started = time.monotonic()
    last = None
    while time.monotonic() - started < 120:
        mv = api.get_namespaced_custom_object(GROUP, VERSION, "studio", MODEL_VERSIONS, "sdxl")
        status = mv.get("status") or {}
        rollout = (status.get("rollout") or {}).get("phase")
        if show and rollout != last:
            console.print(f"  rollout of {version}: {rollout}, ready {status.get('ready')}")
            last = rollout
        if status.get("phase") == "Available" and status.get("currentVersion") == version:
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"{version} did not become available")


def cluster(env: dict[str, str], work: Path, url: str, kube: KubeControlPlane) -> None:
    console.rule("[bold]2. a cluster: the operator and three node agents")
    toolchain = ensure_toolchain()
    api = config.new_client_from_config(config_file=str(kube.kubeconfig))
    install_crds(api)
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "studio"}})
    processes: list[ManagedProcess] = []
    try:
        for node in NODES:
            core.create_node({"metadata": {"name": node, "labels": {"gpu": "a100"}}})
            processes.append(
                node_agent(node, work / node, log_path=work / f"{node}.log", env=env).start()
            )
        processes.append(
            modelcache_process(
                "operator", ["operator"], log_path=work / "operator.log", env=env
            ).start()
        )
        custom = client.CustomObjectsApi(api)
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "ModelVersion",
            "metadata": {"name": "sdxl", "namespace": "studio"},
            "spec": {
                "source": {"url": url},
                "version": "v1",
                "nodeSelector": {"matchLabels": {"gpu": "a100"}},
                "rollout": {"canary": 1, "maxUnavailable": 1},
            },
        }
        console.print("[bold cyan]$ kubectl apply -f sdxl.yaml[/]")
        console.print(yaml.safe_dump(manifest, sort_keys=False), markup=False, highlight=False)
        custom.create_namespaced_custom_object(GROUP, VERSION, "studio", MODEL_VERSIONS, manifest)
        console.print(
            f"[green]v1 available on every node in {wait_phase(custom, 'v1'):.1f}s "
            "(first pull included)"
        )
        console.print("[bold cyan]$ kubectl get mv -n studio[/]")
        kubectl_get(toolchain.kubectl, env)

        console.print(
            "[bold cyan]$ kubectl patch mv sdxl -n studio --type merge "
            '-p \'{"spec":{"version":"v2"}}\'[/]'
        )
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "studio", MODEL_VERSIONS, "sdxl", {"spec": {"version": "v2"}}
        )
        seconds = wait_phase(custom, "v2", show=True)
        console.print(f"[green]v2 prefetched everywhere, then canary, then waves: {seconds:.1f}s")
        console.print(node_table(custom))

        started = time.monotonic()
        sh(env, "rollback", "sdxl", "-n", "studio")
        wait_phase(custom, "v1")
        seconds = time.monotonic() - started
        console.print(f"[green]fleet rollback to v1: every node serving it {seconds:.2f}s later")
        kubectl_get(toolchain.kubectl, env)
    finally:
        for process in reversed(processes):
            process.stop()


def make_adapters(env: dict[str, str], work: Path, url: str) -> None:
    """Two LoRA versions for the studio model, made by its tool and published to L3."""
    for version, seed, rank in (("v1", 1, 8), ("v2", 2, 4)):
        out = work / "studio-lora" / version
        args = ["examples.studio.adapters", str(out), "--seed", str(seed), "--rank", str(rank)]
        console.print(f"[bold cyan]$ python -m {' '.join(args)}[/]")
        subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, env=env, check=True, capture_output=True
        )
        sh(env, "publish", str(out), url, "--version", version)


class Designers:
    """Three clients generating back to back, as designers do, until stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.served: list[dict[str, object]] = []
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(3)]

    def run(self, seed: int) -> None:
        while not self.stop.is_set():
            seed += 3
            try:
                response = requests.post(f"{self.base}/generate", json={"seed": seed}, timeout=60)
            except requests.RequestException as error:
                self.failed.append(str(error))
                continue
            if response.ok:
                self.served.append(response.json())
            else:
                self.failed.append(response.text)

    def __enter__(self) -> Designers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def summary(self) -> str:
        by_version: dict[str, int] = {}
        for answer in self.served:
            by_version[str(answer["version"])] = by_version.get(str(answer["version"]), 0) + 1
        latencies = sorted(float(str(answer["seconds"])) for answer in self.served)
        p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0
        return (
            f"{len(self.served)} generations during the swaps, {len(self.failed)} failed; "
            f"by version {by_version}; p95 {p95 * 1000:.0f} ms (each on the one version it reports)"
        )


def wait_live(base: str, version: str, processes: list[ManagedProcess]) -> float:
    """Seconds until the studio reports `version` live."""
    started = time.monotonic()
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=5).json()["live_version"] == version:
                return time.monotonic() - started
        except requests.RequestException:
            pass  # not listening yet
        for process in processes:
            if (reason := process.exit_reason()) is not None:
                raise SystemExit(reason)
        if time.monotonic() - started > 60:
            raise SystemExit(f"the studio did not go live on {version}")
        time.sleep(0.02)


def swap_row(step: str, seconds: float, last: dict[str, Any]) -> list[str]:
    timings = last["timings"]
    return [
        step,
        str(last["live_version"]),
        f"{seconds * 1000:.0f} ms",
        f"{(timings['read_s'] + timings['verify_s']) * 1000:.1f} ms",
        f"{timings['stage_s'] * 1000:.1f} ms",
        f"{timings['drain_s'] * 1000:.1f} ms",
        f"{(timings['swap_s'] - timings['drain_s']) * 1000:.2f} ms",
    ]


def studio(env: dict[str, str], work: Path, url: str) -> None:
    console.rule("[bold]3. the studio: generations while the LoRA is swapped in place")
    lora_url = url.rsplit("/", 1)[0] + "/studio-lora"
    make_adapters(env, work, lora_url)
    root, port = work / "studio-cache", free_port()
    base = f"http://127.0.0.1:{port}"
    model = {"name": "studio/sdxl", "source": lora_url, "version": "v1", "prefetch": ["v2"]}
    node: dict[str, Any] = {
        "root": str(root),
        "node": "gpu-01",
        "metrics_port": free_port(),
        "metrics_host": "127.0.0.1",
        "poll_seconds": 0.1,
        "resync_seconds": 5,
        "models": [{**model, "reload": [f"{base}/modelcache/reload"]}],
    }
    config_path = work / "studio-node.yaml"
    config_path.write_text(yaml.safe_dump(node, sort_keys=False))
    args = ["examples.studio", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--model", "studio/sdxl", "--root", str(root)]
    console.print(f"[bold cyan]$ python -m {' '.join(args)}[/]")
    console.print(f"[bold cyan]$ modelcache agent --config {config_path.name}[/]")
    processes = [
        ManagedProcess(
            "studio", [sys.executable, "-m", *args], log_path=work / "studio.log", env=env, cwd=ROOT
        ),
        ManagedProcess(
            "agent",
            [sys.executable, "-m", "modelcache", "agent", "--config", str(config_path)],
            log_path=work / "studio-agent.log",
            env=env,
        ),
    ]
    table = Table("STEP", "LIVE", "SEEN AFTER", "READ+VERIFY", "STAGE", "DRAIN", "COPY", box=None)
    try:
        for process in processes:
            process.start()
        seconds = wait_live(base, "v1", processes)
        console.print(
            f"[green]agent pulled v1 and v2 (prefetched); studio up, live on v1, in {seconds:.1f}s"
        )
        with Designers(base) as designers:
            for step, version in (("v1 -> v2", "v2"), ("rollback -> v1", "v1")):
                time.sleep(0.5)  # the designers generate on the live version for a moment
                node["models"][0]["version"] = version
                config_path.write_text(yaml.safe_dump(node, sort_keys=False))
                seconds = wait_live(base, version, processes)
                last = requests.get(f"{base}/healthz", timeout=5).json()["last_reload"]
                table.add_row(*swap_row(step, seconds, last))
            time.sleep(0.5)
    finally:
        for process in reversed(processes):
            process.stop()
    console.print(table)
    console.print(
        "  SEEN AFTER: from the config change to the studio reporting the version (agent "
        "poll + flip + reload call); DRAIN: the swap waiting for generations in flight; "
        "COPY: into the resident slots"
    )
    console.print(f"[green]{designers.summary()}")
    generated = [
        line for line in (work / "studio.log").read_text().splitlines() if "GENERATE" in line
    ]
    if generated:
        console.print(f"  studio log: {generated[-1]}", markup=False, highlight=False)
    if designers.failed:
        raise SystemExit(f"generations failed during the swaps: {designers.failed[:3]}")


def main() -> None:
    console.print(
        "[bold]modelcache demo[/]: starting a real kube-apiserver + etcd and SeaweedFS on loopback"
    )
    ensure_toolchain()
    with tempfile.TemporaryDirectory(prefix="modelcache-demo-") as tmp:
        work = Path(tmp)
        with ObjectStore() as store, KubeControlPlane() as kube:
            store.create_bucket("studio-models")
            env = {
                **os.environ,
                "OSS_ENDPOINT": store.endpoint,
                "KUBECONFIG": str(kube.kubeconfig),
                "PYTHONUNBUFFERED": "1",
                "COLUMNS": "120",
            }
            url = "oss://studio-models/sdxl"
            one_server(env, work, url)
            cluster(env, work, url, kube)
            studio(env, work, url)
    console.rule("[bold green]done: every process the demo started is stopped")


if __name__ == "__main__":
    main()
