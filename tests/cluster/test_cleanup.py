"""A cluster whose owner is killed with SIGKILL leaves nothing on the machine.

It runs before the session's cluster (it needs the machine to itself): a child process
starts a one-node cluster and a pod with a hostPath, and is killed with SIGKILL; the
reaper it started must then stop the containers and undo every mount, link, rule,
cgroup and sysctl, as `hostnet.leftovers()` and /proc see it, and the host dirs the
nodes mount over are as they were. On kind (MODELCACHE_E2E_CLUSTER=kind) the same for
a kind cluster: its private dockerd, node containers, bridge, mounts, the sysctls the
privileged nodes set on the host and the /lib/modules Docker makes, as
`kindhost.leftovers()` sees them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from filelock import Timeout

from modelcache.testing import hostnet, kindhost
from modelcache.testing.cluster import HOSTPATH, NODE_PRIVATE_DIRS, cluster_lock, lock_wait
from modelcache.testing.hostprep import cluster_unavailable
from modelcache.testing.kind import kind_unavailable

FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")
OWNER = textwrap.dedent(
    """
    import sys, time
    from modelcache.testing.cluster import KubeletCluster
    from modelcache.testing.images import AGENT_IMAGE
    from pathlib import Path
    cluster = KubeletCluster(nodes=1, studio=False, work_dir=Path(sys.argv[1]))
    cluster.start()
    cluster.kubectl("run", "sleeper", f"--image={AGENT_IMAGE}", "--image-pull-policy=Never",
                    "--command", "--", "python3", "-c", "import time; time.sleep(3600)")
    cluster.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
    print("UP", flush=True)
    time.sleep(3600)
    """
)


KIND_OWNER = textwrap.dedent(
    """
    import sys, time
    from modelcache.testing.kind import KindCluster
    from modelcache.testing.images import AGENT_IMAGE
    from pathlib import Path
    cluster = KindCluster(nodes=1, studio=False, work_dir=Path(sys.argv[1]))
    cluster.start()
    cluster.kubectl("run", "sleeper", f"--image={AGENT_IMAGE}", "--image-pull-policy=Never",
                    "--command", "--", "python3", "-c", "import time; time.sleep(3600)")
    cluster.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
    print("UP", flush=True)
    time.sleep(3600)
    """
)


def _wait_for_up(owner: subprocess.Popen[str]) -> None:
    assert owner.stdout is not None
    lines = []
    for line in owner.stdout:
        lines.append(line)
        if line.strip() == "UP":
            break
    assert lines, "the owner printed nothing"
    assert lines[-1].strip() == "UP", "".join(lines[-30:])


def _require(reason: str | None) -> None:
    if reason is not None:
        if os.environ.get("MODELCACHE_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"MODELCACHE_REQUIRE_CLUSTER=1 but {reason}")
        pytest.skip(reason)
    lock = cluster_lock()
    try:
        lock.acquire(timeout=lock_wait())
    except Timeout:
        pytest.fail("a cluster is already up: this test runs first, on a machine to itself")
    lock.release()


@pytest.mark.only_on("kind")  # the kubelet harness's own is below
def test_a_kind_cluster_killed_with_sigkill_leaves_nothing() -> None:
    _require(kind_unavailable())
    sysctls = kindhost.read_sysctls()
    modules = kindhost.MODULES.exists()
    work_dir = Path(tempfile.mkdtemp(prefix="mc-kind-kill-"))
    owner = subprocess.Popen(
        [sys.executable, "-c", KIND_OWNER, str(work_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_up(owner)
        data_root = Path(kindhost.Ledger().read()["data_root"])
        running = kindhost.leftovers(data_root)
        assert any(f.startswith("process") for f in running), running
        assert f"link {kindhost.BRIDGE}" in running
        assert kindhost.read_sysctls() != sysctls, "the nodes changed the host's sysctls"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 120
    while kindhost.LEDGER.exists() and time.monotonic() < deadline:  # the reaper's last step
        time.sleep(1)
    assert not kindhost.LEDGER.exists(), "the reaper finished its undo"
    assert kindhost.leftovers(data_root) == []
    assert kindhost.read_sysctls() == sysctls, "every sysctl the nodes set got its value back"
    assert kindhost.MODULES.exists() == modules, "/lib/modules is as it was"
    assert not (work_dir / "nodes").exists(), "the nodes' cache dirs are gone"
    shutil.rmtree(work_dir)  # the kubeconfig and kind's config: the caller's to remove


@pytest.mark.only_on("kubelet")  # the kind harness's own is above
def test_a_cluster_killed_with_sigkill_leaves_nothing() -> None:
    reason = cluster_unavailable()
    if reason is not None:
        if os.environ.get("MODELCACHE_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"MODELCACHE_REQUIRE_CLUSTER=1 but {reason}")
        pytest.skip(reason)
    lock = cluster_lock()
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pytest.fail("a cluster is already up: this test runs first, on a machine to itself")
    lock.release()
    forwarding = FORWARDING.read_text()
    host_dirs = {path: path.exists() for path in (HOSTPATH, *NODE_PRIVATE_DIRS)}
    work_dir = tempfile.mkdtemp(prefix="mc-kill-")
    owner = subprocess.Popen(
        # A short path: kubelet's unix sockets under it must fit in 108 bytes.
        [sys.executable, "-c", OWNER, work_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert owner.stdout is not None
        lines = []
        for line in owner.stdout:
            lines.append(line)
            if line.strip() == "UP":
                break
        assert lines, "the owner printed nothing"
        assert lines[-1].strip() == "UP", "".join(lines[-30:])
        assert hostnet.leftovers(), "a running cluster shows in leftovers()"
        shims = _our_processes()
        assert shims, "the pod's containers run under our cgroups"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 90
    while hostnet.LEDGER.exists() and time.monotonic() < deadline:  # the reaper's last step
        time.sleep(1)
    assert not hostnet.LEDGER.exists(), "the reaper finished its undo"
    # The machine had no KUBE-*/CNI-* chain before (or the cluster would not start).
    assert hostnet.leftovers(include_chains=True) == []
    assert _our_processes() == []
    assert not Path(work_dir).exists(), "the work dir (kubelet and containerd state) is gone"
    assert FORWARDING.read_text() == forwarding, "ip_forward got its value back"
    # The nodes wrote their kubelet, CNI and log-link state in their own dirs: the host's
    # /var/lib/kubelet, /var/lib/cni, ... are as they were (absent, if they were).
    assert {path: path.exists() for path in host_dirs} == host_dirs


def _our_processes() -> list[str]:
    """Processes in our nodes' cgroups, and any process naming the cluster's run dir."""
    found = []
    for group in hostnet.our_cgroups():
        try:
            found += (group / "cgroup.procs").read_text().split()
        except OSError:
            continue
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(hostnet.STATE_ROOT).encode() in cmdline:
                found.append(proc.name)
    return sorted(set(found))
