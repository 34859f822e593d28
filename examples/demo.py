"""`make demo`: modelcache end to end on this machine, on real parts, in about two minutes.

Starts a real kube-apiserver + etcd and a SeaweedFS S3 store on loopback, then:
1. one GPU server without Kubernetes: publish two versions of a model, `use` v1,
   `use` v2 (only the changed file is downloaded), `rollback` (a flip, no download);
2. a cluster: the operator and three node agents (local processes, one cache dir
   each); apply a ModelVersion, watch READY reach 3/3, roll out v2 (canary, then
   waves), roll back with `modelcache rollback -n`. Everything is stopped at the end.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client, config
from rich.console import Console
from rich.table import Table

from modelcache.api.k8s import API_VERSION, GROUP, VERSION
from modelcache.testing import KubeControlPlane, ObjectStore, ensure_toolchain
from modelcache.testing.crds import install_crds
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
        json.loads(line) for line in (work / "server-cache/events.jsonl").read_text().splitlines()
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
        cache = api.get_cluster_custom_object(GROUP, VERSION, "nodecaches", node)
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
        mv = api.get_namespaced_custom_object(GROUP, VERSION, "studio", "modelversions", "sdxl")
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
                ManagedProcess(
                    f"agent {node}",
                    [
                        sys.executable,
                        "-m",
                        "modelcache",
                        "agent",
                        "--node",
                        node,
                        "--cache",
                        str(work / node),
                        "--metrics-port",
                        str(free_port()),
                        "--metrics-host",
                        "127.0.0.1",
                        "--status-interval",
                        "0.2",
                    ],
                    log_path=work / f"{node}.log",
                    env=env,
                ).start()
            )
        processes.append(
            ManagedProcess(
                "operator",
                [sys.executable, "-m", "modelcache", "operator"],
                log_path=work / "operator.log",
                env=env,
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
        custom.create_namespaced_custom_object(GROUP, VERSION, "studio", "modelversions", manifest)
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
            GROUP, VERSION, "studio", "modelversions", "sdxl", {"spec": {"version": "v2"}}
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
    console.rule("[bold green]done: every process the demo started is stopped")


if __name__ == "__main__":
    main()
