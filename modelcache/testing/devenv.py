"""`modelcache dev up/down`: the test services in the background, for a person.

`up` builds the toolchain in the foreground (with progress), then starts a
detached daemon that owns etcd, kube-apiserver and SeaweedFS and records how to
reach them in `state.json`; `down` stops that daemon by PID, and the daemon stops
its children. The children die with the daemon even if it is SIGKILLed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcache.testing.cache import cache_dir
from modelcache.testing.cluster import KubeletCluster, undo_leftovers
from modelcache.testing.kube import KubeControlPlane
from modelcache.testing.objectstore import ObjectStore
from modelcache.testing.ports import LOOPBACK, wait_until
from modelcache.testing.process import pid_alive
from modelcache.testing.toolchain import ensure_toolchain

DEFAULT_BUCKET = "models"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class DevState:
    """What a person (or the demo) needs to reach the running services."""

    pid: int
    kubeconfig: str
    apiserver: str
    s3_endpoint: str
    bucket: str
    kubectl: str
    helm: str
    log: str
    children: dict[str, int]
    nodes: dict[str, str] | None = None  # with --cluster: node name -> its hostPath dir


def _object_store_host(cluster: bool) -> str:
    """With a cluster, the store listens where pods reach it (the cluster's own address)."""
    if cluster:
        from modelcache.testing.hostnet import HOST_ADDRESS  # noqa: PLC0415

        return HOST_ADDRESS
    return LOOPBACK


def default_state_dir() -> Path:
    return cache_dir() / "dev"


def read_state(state_dir: Path) -> DevState | None:
    """The recorded state if its daemon is still alive, else None."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        state = DevState(**data)
    except (OSError, ValueError, TypeError):
        return None
    return state if pid_alive(state.pid) else None


def up(
    state_dir: Path | None = None,
    *,
    timeout: float = 180.0,
    cluster_nodes: int | None = None,
) -> tuple[DevState, bool]:
    """Start the services unless already up; returns (state, started_now).

    `cluster_nodes`: a real cluster with that many kubelet nodes instead of a bare
    apiserver (root only; its images and binaries are built first, with progress)."""
    directory = state_dir or default_state_dir()
    running = read_state(directory)
    if running is not None:
        return running, False
    ensure_toolchain()
    serve_args = ["--state-dir", str(directory)]
    if cluster_nodes is not None:
        timeout = max(timeout, 600.0)
        serve_args += ["--cluster-nodes", str(cluster_nodes)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE_FILE).unlink(missing_ok=True)
    log_path = directory / "devenv.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelcache.testing.devenv",
                "serve",
                *serve_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and the terminal
        )

    def daemon_died() -> str | None:
        if daemon.poll() is None:
            return None
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        return f"the dev daemon exited with code {daemon.returncode}:\n{tail}"

    wait_until(
        lambda: read_state(directory) is not None,
        timeout=timeout,
        what="modelcache dev environment",
        alive=daemon_died,
        interval=0.25,
    )
    state = read_state(directory)
    assert state is not None
    return state, True


def down(state_dir: Path | None = None, *, timeout: float = 30.0) -> bool:
    """Stop the daemon (and so its services); False when nothing was running."""
    directory = state_dir or default_state_dir()
    state = read_state(directory)
    if state is None:
        (directory / STATE_FILE).unlink(missing_ok=True)
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(state.pid):
        # The children carry PDEATHSIG, but make sure: kill the recorded PIDs too.
        for pid in [state.pid, *state.children.values()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return True


def down_all(state_dir: Path | None = None) -> bool:
    """`modelcache dev down`: the daemon, and a crashed cluster's leftovers if any."""
    stopped = down(state_dir)
    undone = os.geteuid() == 0 and bool(undo_leftovers())
    return stopped or undone


def serve(state_dir: Path, cluster_nodes: int | None = None) -> None:
    """The daemon: start everything, publish state.json, wait for SIGTERM/SIGINT, stop."""
    toolchain = ensure_toolchain()
    for sub in ("kube", "s3"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    kube: KubeControlPlane | KubeletCluster
    if cluster_nodes is not None:
        kube = KubeletCluster(nodes=cluster_nodes, report=lambda m: print(m, flush=True))
    else:
        kube = KubeControlPlane(toolchain=toolchain, work_dir=state_dir / "kube")
    store = ObjectStore(
        weed=toolchain.weed,
        work_dir=state_dir / "s3",
        host=_object_store_host(cluster_nodes is not None),
    )
    try:
        kube.start()
        store.start()
        store.create_bucket(DEFAULT_BUCKET)
        plane = kube.control_plane if isinstance(kube, KubeletCluster) else kube
        assert plane is not None
        children = {p.name: p.pid for p in kube.processes if p.pid is not None}
        children.update({p.name: p.pid for p in plane.processes if p.pid is not None})
        nodes = None
        if isinstance(kube, KubeletCluster):
            nodes = {n.name: str(n.hostpath) for n in kube.nodes}
            for node in kube.nodes:
                children.update({p.name: p.pid for p in node.processes if p.pid is not None})
        if store.process is not None and store.process.pid is not None:
            children["weed"] = store.process.pid
        state = DevState(
            pid=os.getpid(),
            kubeconfig=str(kube.kubeconfig),
            apiserver=plane.url,
            s3_endpoint=store.endpoint,
            bucket=DEFAULT_BUCKET,
            kubectl=str(toolchain.kubectl),
            helm=str(toolchain.helm),
            log=str(state_dir / "devenv.log"),
            children=children,
            nodes=nodes,
        )
        tmp = state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.replace(tmp, state_dir / STATE_FILE)
        print(f"modelcache dev environment ready: {json.dumps(asdict(state))}", flush=True)
        received = signal.sigwait({signal.SIGTERM, signal.SIGINT})
        print(f"received signal {received}, stopping", flush=True)
    finally:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        store.stop()
        kube.stop()


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m modelcache.testing.devenv")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cluster-nodes", type=int)
    args = parser.parse_args()
    serve(args.state_dir, args.cluster_nodes)


if __name__ == "__main__":
    _main()
