"""A real Kubernetes cluster on this machine: control plane, kubelet nodes, kube-proxy, CoreDNS.

Everything the kubelets run is real: containerd + runc per node, a CNI bridge per
node, the scheduler and controller-manager placing and running pods, kube-proxy
routing Services. Each node's containerd and kubelet live in a mount namespace of
their own, in which the cache hostPath (/var/lib/modelcache) is that node's own
directory: two nodes on one machine do not share a disk. Needs root; every change to
the machine is recorded by `hostnet` and undone by `stop()`, or by the next start
after a crash.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import yaml
from filelock import FileLock, Timeout

from modelcache.api.layout import DEFAULT_ROOT
from modelcache.testing import hostnet, kindhost, reaper
from modelcache.testing.cache import cache_dir
from modelcache.testing.containerd import BIG_IMAGE_BYTES, import_disk_need, unpacked_layer_digests
from modelcache.testing.hostprep import ensure_host_packages
from modelcache.testing.images import (
    COREDNS_IMAGE,
    PAUSE_IMAGE,
    STUDIO_IMAGE,
    ImageTarball,
    ensure_images,
)
from modelcache.testing.kube import KubeControlPlane
from modelcache.testing.pki import ApiserverPki, issue_client_cert
from modelcache.testing.ports import LOOPBACK, free_ports, wait_until
from modelcache.testing.process import ManagedProcess, stop_all
from modelcache.testing.toolchain import (
    KUBERNETES_VERSION,
    NodeToolchain,
    Toolchain,
    ensure_node_toolchain,
    ensure_toolchain,
)

Report = Callable[[str], None]
HOSTPATH = DEFAULT_ROOT  # the chart's agent.cacheRoot
# Where kubelet, containerd's CNI and kubelet's log links write whatever their flags say
# (kubelet's device-plugin socket is fixed at /var/lib/kubelet/device-plugins/kubelet.sock:
# two kubelets starting at once raced for it). Each node mounts its own dir over each one.
NODE_PRIVATE_DIRS = (Path("/var/lib/kubelet"), Path("/var/lib/cni"), Path("/var/log/containers"))
CLUSTER_DNS = "10.0.0.10"
NODE_LABEL = "modelcache.io/test-node"
ASSETS = Path(__file__).resolve().parent / "assets"


def cluster_lock() -> FileLock:
    """Held by the one process that owns this machine's cluster; the kernel frees it when
    that process dies, so a free lock with a ledger left means a crashed owner."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    return FileLock(str(cache_dir() / "cluster.lock"))


def lock_wait() -> float:
    """Seconds a new cluster waits for the lock: 5, or MODELCACHE_CLUSTER_LOCK_WAIT (a
    machine shared by several runs queues them instead of failing the later one)."""
    return float(os.environ.get("MODELCACHE_CLUSTER_LOCK_WAIT", "5"))


def undo_leftovers() -> list[str]:
    """Undo what a dead cluster owner left on the machine; never touch a live cluster.
    Returns what was found before the undo (empty when the machine was clean)."""
    lock = cluster_lock()
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return []  # a live cluster (a `dev up --cluster`): its owner cleans up
    try:
        # A process that started a cluster knows the machine had no KUBE-* chains before.
        found = hostnet.leftovers(include_chains=KubeletCluster.started_here or None)
        if found:
            hostnet.undo_all(ours_chains=KubeletCluster.started_here)
        # A kind run's (KindCluster): its daemon, containers, bridge, mounts, sysctls.
        kind = kindhost.leftovers(kindhost.data_root())
        if kind or kindhost.LEDGER.exists():
            kindhost.undo_all()
        return found + kind
    finally:
        lock.release()


class ClusterError(RuntimeError):
    """The cluster could not be started; the message says what and has the log's tail."""


def _quiet(_: str) -> None:
    return None


@dataclass
class Node:
    """One kubelet node: its name, its own cache directory, its containerd socket."""

    index: int
    name: str
    work: Path
    run: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def hostpath(self) -> Path:
        """What the node's pods see at /var/lib/modelcache (inspect it from the host here)."""
        return self.work / "hostpath"

    @property
    def socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def mount_ns(self) -> Path:
        return self.run / "mntns"

    @property
    def bridge(self) -> str:
        return f"{hostnet.BRIDGE_PREFIX}{self.index}"

    @property
    def cgroup(self) -> str:
        return f"{hostnet.CGROUP_PREFIX}{self.index}"

    @property
    def pod_cidr(self) -> str:
        return f"10.88.{self.index}.0/24"

    @property
    def kubelet(self) -> ManagedProcess | None:
        return next((p for p in self.processes if p.name.startswith("kubelet")), None)

    def in_namespace(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--mount={self.mount_ns}", "--", *argv]


class KubeletCluster:
    """`with KubeletCluster(nodes=2) as cluster:` then `cluster.kubeconfig`, `cluster.nodes`."""

    started_here: ClassVar[bool] = False  # whether this process ever started one
    kubernetes_version: ClassVar[str] = KUBERNETES_VERSION  # every binary is stamped with it

    def __init__(
        self,
        *,
        nodes: int = 2,
        work_dir: Path | None = None,
        report: Report | None = None,
        tie_to_parent: bool = True,
        studio: bool = True,
    ) -> None:
        """`studio=False` leaves out the inference image (several GB to import per node)."""
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.node_count = nodes
        self.studio = studio
        self.work_dir = work_dir or cache_dir() / "cluster"
        self.report = report or _quiet
        self.tie_to_parent = tie_to_parent
        self.nodes: list[Node] = []
        self.control_plane: KubeControlPlane | None = None
        self.processes: list[ManagedProcess] = []
        self.images: list[ImageTarball] = []
        self.toolchain: Toolchain | None = None
        self.node_toolchain: NodeToolchain | None = None
        self._reaper: int | None = None
        self._lock = cluster_lock()
        self._big_import = threading.Lock()

    # --- public -------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        assert self.control_plane is not None, "the cluster is not started"
        return self.control_plane.kubeconfig

    @property
    def address(self) -> str:
        """The host address pods reach the apiserver and test servers on."""
        return hostnet.HOST_ADDRESS

    @property
    def helm_binary(self) -> Path:
        assert self.toolchain is not None, "the cluster is not started"
        return self.toolchain.helm

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        assert self.toolchain is not None
        result = subprocess.run(
            [str(self.toolchain.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
        return result.stdout

    def start(self) -> KubeletCluster:
        try:
            self._lock.acquire(timeout=5)
        except Timeout as error:
            raise ClusterError(
                "another modelcache cluster runs on this machine (`modelcache dev down` "
                "stops one started by `modelcache dev up --cluster`)"
            ) from error
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, *, studio: bool = True) -> Node:
        """One more kubelet node, joined and Ready: a node that joins the running cluster.
        `studio=False` leaves the (large) inference image out of its containerd."""
        node = self._new_node(len(self.nodes) + 1)
        self.nodes.append(node)
        images = self.images
        if not studio:
            self.images = [i for i in images if i.ref != STUDIO_IMAGE]
        try:
            self._start_nodes([node])
        finally:
            self.images = images
        self._wait_ready([node])
        return node

    def start_kubelet(self, node: Node) -> None:
        """Start a node's kubelet again (after `stop_kubelet`); its pods are still there."""
        if node.kubelet is None:
            self._start_kubelet(node)

    def stop_kubelet(self, node: Node) -> None:
        """Stop a node's kubelet (its pods keep running, the node stops reporting)."""
        kubelet = node.kubelet
        if kubelet is not None:
            kubelet.stop()
            node.processes.remove(kubelet)

    def stop(self) -> None:
        """Stop everything by PID and undo every change to the machine."""
        try:
            for node in reversed(self.nodes):
                kubelet = node.kubelet
                if kubelet is not None:
                    kubelet.stop()
            hostnet.kill_cgroup_tasks()
            for node in reversed(self.nodes):
                stop_all(node.processes)
                node.processes.clear()
            stop_all(self.processes)
            self.processes.clear()
            if self.control_plane is not None:
                self.control_plane.stop()
            if self.node_toolchain is not None:
                subprocess.run(
                    [str(self.node_toolchain.kube_proxy), "--cleanup"],
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
            hostnet.undo_all([self.work_dir])
            if self._reaper is not None:  # the ledger is gone: it would exit within a second
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._reaper, signal.SIGTERM)
                self._reaper = None
        finally:
            if self._lock.is_locked:
                self._lock.release()

    def __enter__(self) -> KubeletCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- start-up -------------------------------------------------------------------------
    def _start(self) -> None:
        say = self.report
        ensure_host_packages(say)
        self.toolchain = ensure_toolchain(say)
        self.node_toolchain = ensure_node_toolchain(say)
        self.images = ensure_images(self.node_toolchain, say, studio=self.studio)
        self._check_disk()
        KubeletCluster.started_here = True
        say("cleaning up after any earlier cluster")
        hostnet.undo_all([self.work_dir])
        self.work_dir.mkdir(parents=True, exist_ok=True)
        hostnet.Ledger().add_work_dir(self.work_dir)
        hostnet.prepare_host()
        self._reaper = reaper.spawn(os.getpid(), self.work_dir, cache_dir() / "logs" / "reaper.log")
        for mount_point in (HOSTPATH, *NODE_PRIVATE_DIRS):
            _make_mount_point(mount_point)
        say(f"starting etcd and kube-apiserver on {self.address}")
        self._start_control_plane()
        self.nodes = [self._new_node(i) for i in range(1, self.node_count + 1)]
        self._start_nodes(self.nodes)
        self._wait_ready(self.nodes)
        self._start_coredns()
        say(f"cluster ready: {len(self.nodes)} nodes, KUBECONFIG={self.kubeconfig}")

    def _check_disk(self) -> None:
        """Fail at once, in one line, when the nodes would fill the disk: each node keeps
        every image once (unpacked; the layer blobs are dropped after the import), the
        largest image briefly twice while it imports, and an agent refuses pulls above 95%
        full (its default high watermark)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(self.work_dir)
        sizes = [i.tarball.stat().st_size for i in self.images]
        need = import_disk_need([sizes] * self.node_count) + usage.total // 20 + (4 << 30)
        if usage.free < need:
            raise ClusterError(
                f"not enough disk for a {self.node_count}-node cluster under {self.work_dir}: "
                f"{usage.free / 2**30:.1f} GiB free, about {need / 2**30:.1f} GiB needed "
                f"({sum(sizes) / 2**30:.1f} GiB of images per node, and 5% of the disk "
                "kept free for the agents' watermark)"
            )

    def _spawn(self, name: str, argv: Sequence[str], bucket: list[ManagedProcess]) -> None:
        proc = ManagedProcess(
            name,
            argv,
            log_path=self.work_dir / "logs" / f"{name}.log",
            tie_to_parent=self.tie_to_parent,
        ).start()
        assert proc.pid is not None
        hostnet.Ledger().add_pid(proc.pid)
        bucket.append(proc)

    def _start_control_plane(self) -> None:
        assert self.toolchain is not None
        assert self.node_toolchain is not None
        pki_dir = self.work_dir / "control-plane" / "pki"
        control = KubeControlPlane(
            toolchain=self.toolchain,
            work_dir=self.work_dir / "control-plane",
            host=self.address,
            with_service_accounts=True,
            tie_to_parent=self.tie_to_parent,
            prepare_pki=self._issue_kubelet_client,
            extra_args=[
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--endpoint-reconciler-type=lease",
            ],
        )
        self.control_plane = control
        control.start()
        for proc in control.processes:
            if proc.pid is not None:
                hostnet.Ledger().add_pid(proc.pid)
        assert control.pki is not None
        pki = control.pki
        nodes = self.node_toolchain
        kubeconfig = str(control.kubeconfig)
        cm_port, sched_port, proxy_metrics, proxy_health = free_ports(4)
        self._spawn(
            "kube-controller-manager",
            [
                str(nodes.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=true",
                "--allocate-node-cidrs=false",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={cm_port}",
                # A stopped kubelet shows as NotReady after 20 s (the default is 50 s).
                "--node-monitor-grace-period=20s",
                "--v=1",
            ],
            self.processes,
        )
        self._spawn(
            "kube-scheduler",
            [
                str(nodes.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={sched_port}",
            ],
            self.processes,
        )
        proxy_config = self.work_dir / "kube-proxy.yaml"
        proxy_config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": kubeconfig},
                    "mode": "iptables",
                    "clusterCIDR": hostnet.POD_CIDR,
                    "hostnameOverride": "node1",
                    "bindAddress": self.address,
                    "metricsBindAddress": f"{LOOPBACK}:{proxy_metrics}",
                    "healthzBindAddress": f"{LOOPBACK}:{proxy_health}",
                    # Leave the machine's conntrack and localnet sysctls alone.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                    "iptables": {"localhostNodePorts": False},
                }
            )
        )
        self._spawn(
            "kube-proxy",
            [str(nodes.kube_proxy), f"--config={proxy_config}", "--v=1"],
            self.processes,
        )

    def _issue_kubelet_client(self, pki: ApiserverPki) -> None:
        """The apiserver's client certificate towards kubelets (logs, exec)."""
        issue_client_cert(pki, pki.ca_cert.parent, "apiserver-kubelet-client", ("system:masters",))

    def _new_node(self, index: int) -> Node:
        name = f"node{index}"
        return Node(
            index=index,
            name=name,
            work=self.work_dir / "nodes" / name,
            run=hostnet.STATE_ROOT / name,
        )

    def _node_kubeconfig(self, node: Node) -> Path:
        """The kubelet's credentials: system:node:<name> in system:nodes, as the Node
        authorizer and NodeRestriction expect of a real kubelet."""
        assert self.control_plane is not None
        assert self.control_plane.pki is not None
        pki = self.control_plane.pki
        cert, key = issue_client_cert(
            pki, node.work / "pki", f"system:node:{node.name}", ("system:nodes",)
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modelcache-test",
                    "cluster": {
                        "server": self.control_plane.url,
                        "certificate-authority-data": base64.b64encode(
                            pki.ca_cert.read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [
                {
                    "name": node.name,
                    "user": {"client-certificate": str(cert), "client-key": str(key)},
                }
            ],
            "contexts": [
                {"name": "default", "context": {"cluster": "modelcache-test", "user": node.name}}
            ],
            "current-context": "default",
        }
        path = node.work / "kubelet.kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _make_mount_namespace(self, node: Node) -> None:
        """A persistent mount namespace for the node, with its own /var/lib/modelcache and
        its own copy of each of NODE_PRIVATE_DIRS."""
        node.run.mkdir(parents=True, exist_ok=True)
        node.hostpath.mkdir(parents=True, exist_ok=True)
        steps = [
            ["mount", "--bind", str(node.run), str(node.run)],
            ["mount", "--make-private", str(node.run)],
        ]
        for argv in steps:
            subprocess.run(argv, check=True, capture_output=True)
        node.mount_ns.touch()
        subprocess.run(
            ["unshare", f"--mount={node.mount_ns}", "--propagation", "slave", "true"],
            check=True,
            capture_output=True,
        )
        binds = [(node.hostpath, HOSTPATH)]
        for shared in NODE_PRIVATE_DIRS:
            own = node.work / "private" / shared.relative_to("/").as_posix().replace("/", "-")
            own.mkdir(parents=True, exist_ok=True)
            binds.append((own, shared))
        for source, target in binds:
            subprocess.run(
                node.in_namespace(["mount", "--bind", str(source), str(target)]),
                check=True,
                capture_output=True,
            )

    def _make_cgroups(self, node: Node) -> None:
        """The node's cgroup root in every v1 hierarchy (cpuset needs cpus and mems set)."""
        root = Path("/sys/fs/cgroup")
        for hierarchy in root.iterdir():
            if hierarchy.is_dir() and (hierarchy / "cgroup.procs").exists():
                (hierarchy / node.cgroup).mkdir(exist_ok=True)
        cpuset = root / "cpuset"
        if (cpuset / node.cgroup).is_dir():
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (cpuset / node.cgroup / knob).write_text((cpuset / knob).read_text())

    def _write_containerd_config(self, node: Node) -> Path:
        config = f"""version = 2
root = "{node.work / "containerd"}"
state = "{node.run / "containerd"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{node.socket}"
[ttrpc]
  address = "{node.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{node.work / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  # Some VMs withhold CAP_SYS_RESOURCE: a negative oom_score_adj fails in runc init.
  restrict_oom_score_adj = true
  stream_server_address = "{LOOPBACK}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{node.work / "cni"}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
"""
        path = node.work / "containerd.toml"
        path.write_text(config)
        cni = node.work / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-modelcache.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": f"modelcache-{node.name}",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": node.bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": node.pod_cidr}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(node.work / "cni-ipam"),
                            },
                        }
                    ],
                }
            )
        )
        return path

    def _write_kubelet_config(self, node: Node) -> Path:
        port, healthz = free_ports(2)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{node.cgroup}",
            "containerRuntimeEndpoint": f"unix://{node.socket}",
            "address": self.address,
            "port": port,
            "healthzPort": healthz,
            "healthzBindAddress": LOOPBACK,
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.control_plane.pki.ca_cert)},  # type: ignore[union-attr]
            },
            "authorization": {"mode": "AlwaysAllow"},
            "failSwapOn": False,
            "resolvConf": "/etc/resolv.conf",
            "clusterDomain": "cluster.local",
            "clusterDNS": [CLUSTER_DNS],
            "podCIDR": node.pod_cidr,
            "podLogsDir": str(node.work / "pod-logs"),
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
            "maxPods": 40,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s",
        }
        path = node.work / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _start_nodes(self, nodes: Sequence[Node]) -> None:
        """containerd, the images, then the kubelet, on each node. Processes start on this
        thread: PR_SET_PDEATHSIG fires when the *thread* that forked a child ends."""
        for node in nodes:
            self._start_containerd(node)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            list(pool.map(self._import_images, nodes))
        self.report(
            f"images imported into {len(nodes)} node(s) in {time.monotonic() - started:.0f}s"
        )
        for node in nodes:
            self._start_kubelet(node)

    def _start_containerd(self, node: Node) -> None:
        node.work.mkdir(parents=True, exist_ok=True)
        self.report(f"starting {node.name}: containerd, images, kubelet")
        self._make_mount_namespace(node)
        self._make_cgroups(node)
        containerd_config = self._write_containerd_config(node)
        self._spawn(
            f"containerd-{node.name}",
            node.in_namespace(["containerd", f"--config={containerd_config}"]),
            node.processes,
        )
        wait_until(
            node.socket.exists,
            timeout=60,
            what=f"containerd of {node.name}",
            alive=node.processes[-1].exit_reason,
        )

    def import_image(self, node: Node, tarball: Path) -> None:
        """Load an image tarball into a node's containerd, where its kubelet finds it, then
        drop the layer blobs it has unpacked: what containerd's `discard_unpacked_layers`
        does for pulls, so a multi-GB image costs each node its size once, not twice."""
        big = tarball.stat().st_size >= BIG_IMAGE_BYTES
        with self._big_import if big else contextlib.nullcontext():
            self._ctr(node, ["images", "import", str(tarball)], what=f"importing {tarball.name}")
            listing = self._ctr(node, ["content", "ls"], what="listing content")
            for digest in unpacked_layer_digests(listing):
                self._ctr(node, ["content", "rm", digest], what=f"dropping layer {digest}")

    def _ctr(self, node: Node, args: list[str], *, what: str) -> str:
        result = subprocess.run(
            ["ctr", f"--address={node.socket}", "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(f"{what} on {node.name}: {result.stderr.strip()}")
        return result.stdout

    def _import_images(self, node: Node) -> None:
        for image in sorted(self.images, key=lambda i: i.tarball.stat().st_size):
            self.import_image(node, image.tarball)

    def _start_kubelet(self, node: Node) -> None:
        assert self.node_toolchain is not None
        kubelet_config = self._write_kubelet_config(node)
        kubeconfig = self._node_kubeconfig(node)
        self._spawn(
            f"kubelet-{node.name}",
            node.in_namespace(
                [
                    str(self.node_toolchain.kubelet),
                    f"--config={kubelet_config}",
                    f"--kubeconfig={kubeconfig}",
                    f"--hostname-override={node.name}",
                    f"--node-ip={self.address}",
                    f"--node-labels={NODE_LABEL}=true",
                    f"--root-dir={node.work / 'kubelet'}",
                    f"--cert-dir={node.work / 'kubelet-pki'}",
                    "--v=1",
                ]
            ),
            node.processes,
        )

    def node_ready(self, name: str) -> bool:
        out = self.kubectl(
            "get",
            "node",
            name,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return out.strip() == "True"

    def _wait_ready(self, nodes: Sequence[Node], timeout: float = 180.0) -> None:
        for node in nodes:
            kubelet = node.kubelet
            wait_until(
                lambda n=node: self.node_ready(n.name),  # type: ignore[misc]
                timeout=timeout,
                what=f"{node.name} Ready",
                alive=kubelet.exit_reason if kubelet is not None else None,
                interval=1.0,
            )

    def _start_coredns(self) -> None:
        manifest = (ASSETS / "coredns.yaml").read_text().replace("COREDNS_IMAGE", COREDNS_IMAGE)
        self.kubectl("apply", "-f", "-", input_text=manifest)
        self.report("waiting for CoreDNS")
        started = time.monotonic()
        self.kubectl(
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            "--timeout=180s",
        )
        self.report(f"CoreDNS ready in {time.monotonic() - started:.0f}s")


def describe(cluster: KubeletCluster) -> dict[str, Any]:
    """What a person needs to use the cluster (printed by `modelcache dev up --cluster`)."""
    assert cluster.toolchain is not None
    return {
        "kubeconfig": str(cluster.kubeconfig),
        "kubectl": str(cluster.toolchain.kubectl),
        "helm": str(cluster.toolchain.helm),
        "nodes": {n.name: str(n.hostpath) for n in cluster.nodes},
        "images": [i.ref for i in cluster.images],
    }


def _make_mount_point(path: Path) -> None:
    """Make `path` on the host for the nodes to mount over; the dirs made are recorded,
    deepest first, so the undo removes them (when empty) and the host keeps none."""
    made = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    ledger = hostnet.Ledger()
    for directory in made:
        ledger.add_created_dir(directory)
