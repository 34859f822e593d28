"""The e2e tests' cluster on kind, for a person with Docker (and a registry) at hand.

The same tests that run on `KubeletCluster` in `make test` run here (`make e2e-kind`):
kind makes the nodes, Docker builds the project's images from the Dockerfiles and kind
loads them into every node. Each worker's `/var/lib/modelcache` is a directory of its own
on this machine (an extraMount), so a test reads a node's cache as it does on
`KubeletCluster`. One extra worker is made at the start and held back (its kubelet
stopped, its Node deleted): `add_node` starts it, which is how a node joins mid-test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcache.api.layout import DEFAULT_ROOT
from modelcache.testing.cache import cache_dir
from modelcache.testing.images import PROJECT_IMAGES, REPO, STUDIO, ProjectImage
from modelcache.testing.toolchain import KUBERNETES_VERSION

Report = Callable[[str], None]
CLUSTER_NAME = "modelcache-e2e"
# kind publishes node images per release: MODELCACHE_KIND_IMAGE picks another one.
NODE_IMAGE = os.environ.get("MODELCACHE_KIND_IMAGE", f"kindest/node:{KUBERNETES_VERSION}")
CACHE_PATH = str(DEFAULT_ROOT)  # the chart's agent.hostPath, inside each kind node
TOOLS = ("docker", "kind", "kubectl", "helm")


class KindError(RuntimeError):
    """kind, docker or kubectl failed; the message names the command and its error."""


def kind_unavailable() -> str | None:
    """One line saying why the kind e2e cannot run here, or None if it can."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the kind e2e needs {', '.join(missing)} on PATH"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "the kind e2e needs a running Docker (`docker info` failed)"
    return None


@dataclass(frozen=True)
class KindNode:
    """A kind worker: its name (the Node's and the container's) and its cache on this host."""

    name: str
    hostpath: Path


def worker_names(cluster: str, count: int) -> list[str]:
    """kind's names for a cluster's workers: `<cluster>-worker`, `<cluster>-worker2`, ..."""
    return [f"{cluster}-worker" + (str(i) if i > 1 else "") for i in range(1, count + 1)]


def kind_config(hostpaths: Sequence[Path]) -> dict[str, Any]:
    """A control plane (tainted: no agent or studio pod lands there) and one worker per
    hostpath, each with that directory as its node's `/var/lib/modelcache`."""
    workers = [
        {
            "role": "worker",
            "extraMounts": [{"hostPath": str(path), "containerPath": CACHE_PATH}],
        }
        for path in hostpaths
    ]
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [{"role": "control-plane"}, *workers],
    }


def _run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    result = subprocess.run(argv, input=input_text, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise KindError(f"{' '.join(argv[:3])}: {' '.join(tail)}")
    return result.stdout


class KindCluster:
    """`with KindCluster(nodes=2) as cluster:` then `cluster.kubeconfig`, `cluster.nodes`."""

    def __init__(
        self,
        *,
        nodes: int = 2,
        name: str = CLUSTER_NAME,
        node_image: str = NODE_IMAGE,
        work_dir: Path | None = None,
        report: Report | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.name = name
        self.node_image = node_image
        self.work_dir = work_dir or cache_dir() / "kind"
        self.report: Report = report or (lambda _: None)
        names = worker_names(name, nodes + 1)  # the last one is held back for add_node
        self._workers = [KindNode(n, self.work_dir / "nodes" / n) for n in names]
        self.nodes: list[KindNode] = self._workers[:nodes]
        self.helm_binary = Path(shutil.which("helm") or "helm")
        self.kubernetes_version = node_image.split(":", 1)[-1].split("@", 1)[0]

    # --- what the tests use, as on KubeletCluster ----------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "kubeconfig"

    @property
    def address(self) -> str:
        """This machine's address on kind's Docker network: pods reach a test server
        listening there through their node (the gateway of the `kind` network)."""
        shown = _run(["docker", "network", "inspect", "kind"])
        for config in json.loads(shown)[0]["IPAM"]["Config"]:
            gateway = str(config.get("Gateway", ""))
            if gateway and ":" not in gateway:
                return gateway
        raise KindError("the kind network has no IPv4 gateway")

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        return _run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input_text=input_text,
            check=check,
        )

    def stop_kubelet(self, node: KindNode) -> None:
        """The node stops reporting; its pods keep running (containerd stays up)."""
        _run(["docker", "exec", node.name, "systemctl", "stop", "kubelet"])

    def start_kubelet(self, node: KindNode) -> None:
        _run(["docker", "exec", node.name, "systemctl", "start", "kubelet"])

    def add_node(self, *, studio: bool = True) -> KindNode:
        """The held-back worker joins (its kubelet registers the Node again), Ready."""
        del studio  # every kind node got every image at the start
        joining = self._workers[len(self.nodes)]
        self.start_kubelet(joining)
        self._wait_ready([joining])
        self.nodes.append(joining)
        return joining

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> KindCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> KindCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start(self) -> None:
        if self.name in _run(["kind", "get", "clusters"]).split():
            raise KindError(
                f"a kind cluster named {self.name} exists: `kind delete cluster "
                f"--name {self.name}` first"
            )
        for worker in self._workers:
            worker.hostpath.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "kind.json"  # JSON is YAML: kind reads it as such
        config.write_text(json.dumps(kind_config([w.hostpath for w in self._workers])))
        self.report(f"kind create cluster {self.name} ({self.node_image})")
        _run(
            [
                "kind",
                "create",
                "cluster",
                f"--name={self.name}",
                f"--image={self.node_image}",
                f"--config={config}",
                f"--kubeconfig={self.kubeconfig}",
                "--wait=5m",
            ]
        )
        for image in (*PROJECT_IMAGES, STUDIO):
            self._load(image)
        held = self._workers[-1]
        self.stop_kubelet(held)
        self.kubectl("delete", "node", held.name, "--wait=true")
        self._wait_ready(self.nodes)

    def _load(self, image: ProjectImage) -> None:
        """Build from this checkout every time (Docker's layer cache makes a rebuild of
        unchanged inputs quick), so the nodes never run an image of older code."""
        self.report(f"docker build {image.ref} ({image.dockerfile})")
        _run(["docker", "build", "-f", str(REPO / image.dockerfile), "-t", image.ref, str(REPO)])
        self.report(f"kind load docker-image {image.ref}")
        _run(["kind", "load", "docker-image", image.ref, f"--name={self.name}"])

    def _wait_ready(self, nodes: Sequence[KindNode], timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes:
            while True:
                shown = self.kubectl(
                    "get",
                    "node",
                    node.name,
                    "-o",
                    'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                    check=False,
                )
                if shown.strip() == "True":
                    break
                if time.monotonic() > deadline:
                    raise KindError(f"node {node.name} not Ready after {timeout:.0f}s")
                time.sleep(2)

    def stop(self) -> None:
        """Delete the cluster; the nodes' caches go with it (emptied from inside each node,
        where the agent wrote them as root)."""
        running = _run(["kind", "get", "clusters"], check=False).split()
        if self.name in running:
            for worker in self._workers:
                empty = ["find", CACHE_PATH, "-mindepth", "1", "-delete"]
                _run(["docker", "exec", worker.name, *empty], check=False)
            _run(["kind", "delete", "cluster", f"--name={self.name}"], check=False)
        shutil.rmtree(self.work_dir / "nodes", ignore_errors=True)
