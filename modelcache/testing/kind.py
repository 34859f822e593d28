"""The e2e tests' cluster on kind, built on this machine with no registry.

The same tests that run on `KubeletCluster` run here (`make e2e-kind`). kind runs on a
private dockerd (its own data root, socket and pidfile; no iptables, bridge or
forwarding of the machine's), started and stopped by PID; the node image is assembled
here (`kindnode`), the pod network is a host-written ptp CNI (kindnetd is not
obtainable), and the project's images are the ones the kubelet harness builds, imported
into each node's containerd. Each worker's `/var/lib/modelcache` is a directory of its
own on this machine (an extraMount), so a test reads a node's cache as on
`KubeletCluster`. One extra worker is made at the start and held back (its kubelet
stopped, its Node deleted): `add_node` starts it, which is how a node joins mid-test.
Every change to the machine is in `kindhost`'s ledger, undone by `stop()` or, after a
kill -9, by the reaper.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import Timeout

from modelcache.api.layout import DEFAULT_ROOT
from modelcache.testing import kindhost, reaper
from modelcache.testing.cache import cache_dir
from modelcache.testing.cluster import cluster_lock, lock_wait
from modelcache.testing.containerd import BIG_IMAGE_BYTES, import_disk_need, unpacked_layer_digests
from modelcache.testing.docker import DockerDaemon, DockerError
from modelcache.testing.hostprep import ensure_host_packages, missing_packages
from modelcache.testing.images import PROJECT_IMAGES, STUDIO_IMAGE, ImageTarball, ensure_images
from modelcache.testing.kindnode import NodeImageBuilder
from modelcache.testing.toolchain import (
    KUBERNETES_VERSION,
    KindToolchain,
    Toolchain,
    ensure_kind_toolchain,
    ensure_node_toolchain,
    ensure_toolchain,
)

Report = Callable[[str], None]
CLUSTER_NAME = "modelcache-e2e"
# A node image to use instead of building one (e.g. kindest/node:v1.35.4 where the
# private daemon reaches a registry).
NODE_IMAGE = os.environ.get("MODELCACHE_KIND_IMAGE", "")
CACHE_PATH = str(DEFAULT_ROOT)  # the chart's agent.hostPath, inside each kind node
POD_SUBNET = "10.244.0.0/16"  # kind's default
CAP_SYS_RESOURCE = 24
CAPSTRIP = Path(__file__).resolve().parent / "assets" / "runc-capstrip"


class KindError(RuntimeError):
    """kind, docker or kubectl failed; the message names the command and its error."""


def kind_unavailable() -> str | None:
    """One line saying why the kind e2e cannot run here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"the kind e2e needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the kind e2e needs root (a private dockerd with privileged nodes)"
    if shutil.which("go") is None:
        return "the kind e2e needs Go to build kind, kubeadm and kubelet (go not on PATH)"
    if missing_packages() and shutil.which("apt-get") is None:
        return f"the kind e2e needs Debian packages {', '.join(missing_packages())}"
    return None


def tarball_layers(tarball: Path) -> set[str]:
    """The layer digests of a `docker save` tarball (its config's rootfs.diff_ids: what
    containerd stores its uncompressed layers under)."""
    with tarfile.open(tarball) as archive:
        manifest = _read_member(archive, "manifest.json")
        layers: set[str] = set()
        for entry in json.loads(manifest):
            config = json.loads(_read_member(archive, entry["Config"]))
            layers.update(config["rootfs"]["diff_ids"])
    return layers


def _read_member(archive: tarfile.TarFile, name: str, limit: int = 1 << 20) -> bytes:
    member = archive.getmember(name)
    if member.size > limit:
        raise KindError(f"{name} in an image tarball is {member.size} bytes (limit {limit})")
    handle = archive.extractfile(member)
    if handle is None:
        raise KindError(f"{name} in an image tarball is not a file")
    return handle.read()


def lacks_capability(proc_status: str, bit: int) -> bool:
    """Whether /proc/self/status's bounding set (CapBnd) lacks capability `bit`."""
    for line in proc_status.splitlines():
        if line.startswith("CapBnd:"):
            return not (int(line.split()[1], 16) >> bit) & 1
    return False


@dataclass(frozen=True)
class KindNode:
    """A kind worker: its name (the Node's and the container's) and its cache on this host."""

    name: str
    hostpath: Path


def worker_names(cluster: str, count: int) -> list[str]:
    """kind's names for a cluster's workers: `<cluster>-worker`, `<cluster>-worker2`, ..."""
    return [f"{cluster}-worker" + (str(i) if i > 1 else "") for i in range(1, count + 1)]


# kubelet on a cgroup v1 host needs failCgroupV1: false (harmless on v2); a stopped
# kubelet shows as NotReady after 20 s, as on KubeletCluster (the default is 50 s).
KUBELET_PATCH = "kind: KubeletConfiguration\nfailCgroupV1: false\nnodeStatusUpdateFrequency: 4s\n"
CONTROLLER_PATCH = [
    {
        "op": "add",
        "path": "/controllerManager/extraArgs/-",
        "value": {"name": "node-monitor-grace-period", "value": "20s"},
    }
]
# Pod sandboxes fail writing a negative oom_score_adj where CAP_SYS_RESOURCE is withheld.
CONTAINERD_PATCH = '[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n'


def kind_config(hostpaths: Sequence[Path]) -> dict[str, Any]:
    """A control plane (tainted: no agent or studio pod lands there) and one worker per
    hostpath, each with that directory as its node's `/var/lib/modelcache`; no default
    CNI (ours is written after `kind create`)."""
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
        "networking": {"disableDefaultCNI": True, "podSubnet": POD_SUBNET},
        "nodes": [{"role": "control-plane"}, *workers],
        "kubeadmConfigPatches": [KUBELET_PATCH],
        "kubeadmConfigPatchesJSON6902": [
            {
                "group": "kubeadm.k8s.io",
                "version": "v1beta4",
                "kind": "ClusterConfiguration",
                "patch": json.dumps(CONTROLLER_PATCH),
            }
        ],
        "containerdConfigPatches": [CONTAINERD_PATCH],
    }


def cni_conflist(pod_cidr: str) -> str:
    """kindnetd's job on one node: ptp veths and host-local addresses from its podCIDR."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "ptp-net",
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                    "mtu": 1500,
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
    )


@dataclass(frozen=True)
class NodeNet:
    name: str
    pod_cidr: str
    address: str


def node_network_script(node: NodeNet, others: Sequence[NodeNet], host_net: str) -> str:
    """What runs in a node to wire it: the CNI config, a route to each other node's pods,
    and pod traffic to this machine (the test store) leaving as the node's address."""
    lines = [
        "set -e",
        "mkdir -p /etc/cni/net.d",
        f"cat > /etc/cni/net.d/10-ptp.conflist <<'EOF'\n{cni_conflist(node.pod_cidr)}\nEOF",
    ]
    lines += [f"ip route replace {o.pod_cidr} via {o.address}" for o in others]
    rule = f"-s {POD_SUBNET} -d {host_net} -j MASQUERADE"
    lines.append(f"iptables -t nat -C POSTROUTING {rule} 2>/dev/null || ")
    lines[-1] += f"iptables -t nat -A POSTROUTING {rule}"
    return "\n".join(lines) + "\n"


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
        studio: bool = True,
        tie_to_parent: bool = True,
    ) -> None:
        """`studio=False` leaves out the inference image (several GB per node)."""
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.name = name
        self.node_image = node_image
        self.studio = studio
        self.tie_to_parent = tie_to_parent
        self.work_dir = work_dir or cache_dir() / "kind"
        self.data_root = kindhost.data_root()
        self.report: Report = report or (lambda _: None)
        names = worker_names(name, nodes + 1)  # the last one is held back for add_node
        self._workers = [KindNode(n, self.work_dir / "nodes" / n) for n in names]
        self.nodes: list[KindNode] = self._workers[:nodes]
        self.kubernetes_version = KUBERNETES_VERSION
        self.toolchain: Toolchain | None = None
        self.kind_tools: KindToolchain | None = None
        self.images: list[ImageTarball] = []
        self.docker: DockerDaemon | None = None
        self._reaper: int | None = None
        self._lock = cluster_lock()

    # --- what the tests use, as on KubeletCluster ----------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "kubeconfig"

    @property
    def address(self) -> str:
        """This machine's address on kind's network (its bridge's): pods reach a test
        server listening there through their node."""
        return kindhost.SUBNET.rsplit(".", 1)[0] + ".1"

    @property
    def helm_binary(self) -> Path:
        assert self.toolchain is not None, "the cluster is not started"
        return self.toolchain.helm

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        assert self.toolchain is not None, "the cluster is not started"
        return self._run(
            [str(self.toolchain.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input_text=input_text,
            check=check,
        )

    def stop_kubelet(self, node: KindNode) -> None:
        """On kind the kubelet is a systemd unit in the node's container: stopped there,
        its pods keep running (containerd stays up), as on KubeletCluster."""
        self._docker("exec", node.name, "systemctl", "stop", "kubelet")

    def start_kubelet(self, node: KindNode) -> None:
        self._docker("exec", node.name, "systemctl", "start", "kubelet")

    def add_node(self, *, studio: bool = True) -> KindNode:
        """On kind a node cannot be added to a running cluster: the held-back worker (made
        with the cluster, its Node deleted) starts its kubelet, registers again, gets a
        podCIDR and our CNI, and turns Ready. It holds every image but the studio one."""
        del studio  # the held-back worker never got the studio image
        joining = self._workers[len(self.nodes)]
        self.start_kubelet(joining)
        self.nodes.append(joining)
        self._wire_network()
        self._wait_ready([joining])
        return joining

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> KindCluster:
        try:
            self._lock.acquire(timeout=lock_wait())
        except Timeout as error:
            raise KindError(
                "another modelcache cluster runs on this machine (kubelet or kind)"
            ) from error
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
        say = self.report
        ensure_host_packages(say)
        self.toolchain = ensure_toolchain(say)
        nodes = ensure_node_toolchain(say)
        self.kind_tools = ensure_kind_toolchain(say)
        self.images = ensure_images(nodes, say, studio=self.studio)
        self._check_disk()
        say("cleaning up after any earlier kind run")
        kindhost.undo_all()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        kindhost.Ledger().begin(self.data_root, self.work_dir)
        self._reaper = reaper.spawn(
            os.getpid(), self.work_dir, cache_dir() / "logs" / "reaper-kind.log", kind=True
        )
        self._start_docker()
        node_image = self.node_image
        if not node_image:
            started = time.monotonic()
            pause, coredns = self.images[0], self.images[1]
            node_image = NodeImageBuilder(
                self.docker,  # type: ignore[arg-type]
                toolchain=self.toolchain,
                nodes=nodes,
                kind=self.kind_tools,
                pause=pause,
                coredns=coredns,
                report=say,
            ).ensure()
            say(f"node image {node_image} ready in {time.monotonic() - started:.0f}s")
        self._docker(
            "network",
            "create",
            f"--subnet={kindhost.SUBNET}",
            "-o",
            f"com.docker.network.bridge.name={kindhost.BRIDGE}",
            kindhost.NETWORK,
        )
        for worker in self._workers:
            worker.hostpath.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "kind.json"  # JSON is YAML: kind reads it as such
        config.write_text(json.dumps(kind_config([w.hostpath for w in self._workers])))
        say(f"kind create cluster {self.name} ({node_image})")
        started = time.monotonic()
        self._kind(
            "create",
            "cluster",
            f"--name={self.name}",
            f"--image={node_image}",
            f"--config={config}",
            f"--kubeconfig={self.kubeconfig}",
        )
        say(f"kind create took {time.monotonic() - started:.0f}s")
        held = self._workers[-1]
        self.stop_kubelet(held)
        self.kubectl("delete", "node", held.name, "--wait=true")
        self._wire_network()
        started = time.monotonic()
        for worker in self._workers:
            self._import_images(worker, studio=self.studio and worker is not held)
        took = time.monotonic() - started
        say(f"images imported into {len(self._workers)} workers in {took:.0f}s")
        self._wait_ready(self.nodes)
        self.kubectl(
            "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s"
        )
        say(f"kind cluster ready: {len(self.nodes)} workers, KUBECONFIG={self.kubeconfig}")

    def _check_disk(self) -> None:
        """Fail at once when the workers' images would fill the disk: each worker keeps the
        images it is given once, the largest briefly twice, and an agent refuses pulls
        above 95% full (its default high watermark)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(self.work_dir)
        held = self._workers[-1]
        per_worker = [
            [
                i.tarball.stat().st_size
                for i in self.images
                if i.ref in self._wanted(studio=self.studio and worker is not held)
            ]
            for worker in self._workers
        ]
        need = import_disk_need(per_worker) + usage.total // 20 + (4 << 30)
        if usage.free < need:
            raise KindError(
                f"not enough disk for the kind cluster under {self.work_dir}: "
                f"{usage.free / 2**30:.1f} GiB free, about {need / 2**30:.1f} GiB needed "
                "(the images each worker holds, and 5% of the disk kept free for the "
                "agents' watermark)"
            )

    @staticmethod
    def _wanted(*, studio: bool) -> set[str]:
        """The images a worker is given: the project's, and the studio's where studio
        pods run (pause and CoreDNS are in the node image already)."""
        return {image.ref for image in PROJECT_IMAGES} | ({STUDIO_IMAGE} if studio else set())

    def _start_docker(self) -> None:
        extra = [f"--cgroup-parent=/{kindhost.CGROUP_PARENT}"]
        if lacks_capability(Path("/proc/self/status").read_text(), CAP_SYS_RESOURCE):
            # Privileged containers ask for a capability this machine withholds: runc
            # fails unless a wrapper strips it from each container's spec.
            wrapper = kindhost.DOCKER_RUN / "runc-capstrip"
            kindhost.DOCKER_RUN.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(CAPSTRIP, wrapper)
            wrapper.chmod(0o755)
            extra += [f"--add-runtime=capstrip={wrapper}", "--default-runtime=capstrip"]
        self.report("starting the kind cluster's private dockerd")
        self.docker = DockerDaemon(
            data_root=self.data_root,
            run_dir=kindhost.DOCKER_RUN,
            extra_args=extra,
            tie_to_parent=self.tie_to_parent,
        ).start()
        assert self.docker.pid is not None
        kindhost.Ledger().add_pid(self.docker.pid)
        # A killed run's containers, their volumes (each node's /var: its images) and
        # network are in the data root still.
        self._remove_containers(check=True)
        self._docker("network", "prune", "--force")

    def _remove_containers(self, *, check: bool) -> None:
        """Every container on the private daemon, with its volumes: a kind node keeps its
        /var (containerd's images, GBs) in an anonymous volume that outlives the node."""
        left = self._docker("ps", "-aq", check=check).split()
        if left:
            self._docker("rm", "--force", "--volumes", *left, check=check)
        self._docker("volume", "prune", "--force", check=check)  # anonymous ones: kind's

    def _run(
        self,
        argv: Sequence[str],
        *,
        input_text: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> str:
        result = subprocess.run(
            argv, input=input_text, capture_output=True, text=True, check=False, env=env
        )
        if check and result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-8:]
            command = " ".join([Path(argv[0]).name, *argv[1:3]])
            raise KindError(f"{command}: " + "\n".join(tail))
        return result.stdout

    def _docker(self, *args: str, check: bool = True, input_text: str | None = None) -> str:
        assert self.docker is not None, "the kind daemon is not started"
        return self._run(["docker", *args], check=check, env=self.docker.env, input_text=input_text)

    def _kind(self, *args: str, check: bool = True) -> str:
        assert self.kind_tools is not None
        assert self.docker is not None
        env = {**self.docker.env, "PATH": f"{self.kind_tools.kind.parent}:{os.environ['PATH']}"}
        return self._run([str(self.kind_tools.kind), *args], check=check, env=env)

    def _node_nets(self) -> list[NodeNet]:
        shown = self.kubectl(
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR} "
            '{.status.addresses[?(@.type=="InternalIP")].address}{"\\n"}{end}',
        )
        return [NodeNet(*line.split()) for line in shown.splitlines() if len(line.split()) == 3]

    def _wire_network(self, timeout: float = 120.0) -> None:
        """Our CNI on every registered node, once each has its podCIDR (kind's
        controller-manager assigns them); idempotent, so a joining node rewires all."""
        deadline = time.monotonic() + timeout
        while True:
            nets = self._node_nets()
            wanted = len(self.nodes) + 1
            if len(nets) >= wanted:
                break
            if time.monotonic() > deadline:
                raise KindError(f"{wanted} nodes with a podCIDR wanted, {timeout:.0f}s: {nets}")
            time.sleep(1)
        for net in nets:
            others = [o for o in nets if o.name != net.name]
            script = node_network_script(net, others, kindhost.SUBNET)
            self._docker("exec", "-i", net.name, "sh", input_text=script)

    def _import_images(self, node: KindNode, *, studio: bool) -> None:
        """Each image into the node's containerd (as `kind load` does), then its layer
        blobs dropped once unpacked: a multi-GB image costs the node its size once."""
        assert self.docker is not None
        wanted = self._wanted(studio=studio)
        for image in sorted(self.images, key=lambda i: i.tarball.stat().st_size):
            if image.ref not in wanted:
                continue
            big = image.tarball.stat().st_size >= BIG_IMAGE_BYTES
            self.report(f"importing {image.ref} into {node.name}" + (" (large)" if big else ""))
            ctr = ["docker", "exec", "-i", node.name, "ctr", "-n", "k8s.io"]
            with image.tarball.open("rb") as tarball:
                result = subprocess.run(
                    [*ctr, "images", "import", "--digests", "-"],
                    stdin=tarball,
                    capture_output=True,
                    env=self.docker.env,
                    check=False,
                )
            if result.returncode != 0:
                err = result.stderr.decode(errors="replace").strip()
                raise KindError(f"importing {image.ref} into {node.name}: {err}")
            # Only this image's layers: the node image's own images are not unpacked yet.
            listing = self._docker("exec", node.name, "ctr", "-n", "k8s.io", "content", "ls")
            digests = sorted(set(unpacked_layer_digests(listing)) & tarball_layers(image.tarball))
            if digests:
                self._docker("exec", node.name, "ctr", "-n", "k8s.io", "content", "rm", *digests)

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
        """Delete the cluster and its network, stop the daemon by PID, undo every change to
        the machine (the sysctls the nodes set, /lib/modules, the bridge, mounts, cgroups).
        The nodes' caches go too (emptied from inside each node, where the agent wrote them
        as root). The node image stays in the daemon's data root: it is the cache."""
        try:
            if self.docker is not None and self.docker.process is not None:
                with contextlib.suppress(KindError, DockerError):
                    for worker in self._workers:
                        empty = ["find", CACHE_PATH, "-mindepth", "1", "-delete"]
                        self._docker("exec", worker.name, *empty, check=False)
                    if self.kind_tools is not None:
                        self._kind("delete", "cluster", f"--name={self.name}", check=False)
                    self._remove_containers(check=False)
                    self._docker("network", "rm", kindhost.NETWORK, check=False)
                self.docker.stop()
            self.docker = None
            kindhost.undo_all()
            if self._reaper is not None:  # the ledger is gone: it would exit within a second
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._reaper, signal.SIGTERM)
                self._reaper = None
        finally:
            if self._lock.is_locked:
                self._lock.release()
