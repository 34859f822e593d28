"""Every change a kubelet cluster makes to this machine, recorded and undone.

The cluster needs an address of its own (on an interface it makes), IP forwarding,
bridge netfilter, FORWARD rules for its pod network, cgroups and mounts; kubelet
and kube-proxy set sysctls and iptables chains of their own. The ledger lives on
tmpfs under /run: what it records was made since boot, so `undo_all()` can put
the machine back after a crashed run as well as after a clean one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelcache.testing.docker import unmount_under

STATE_ROOT = Path("/run/modelcache-cluster")
LEDGER = STATE_ROOT / "ledger.json"
HOST_INTERFACE = "mc-host0"
HOST_ADDRESS = "10.87.0.1"
"""The address the apiserver and the object store listen on, on an interface of our own:
pods reach it through their bridge's gateway, and no test traffic leaves the machine."""
POD_CIDR = "10.88.0.0/16"
SERVICE_CIDR = "10.0.0.0/24"
BRIDGE_PREFIX = "mcbr"
CGROUP_PREFIX = "mc-node"
RULE_COMMENT = "modelcache-cluster"
# What we set, and what kubelet and kube-proxy set (kubelet's kernel defaults).
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
IPTABLES = ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy")
CHAIN_PREFIXES = ("KUBE-", "CNI-")


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a host tool; one that is not installed (iptables before `make testenv`) has
    nothing on this machine to show or undo, so it answers like a failed command."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as missing:
        return subprocess.CompletedProcess(argv, 127, "", str(missing))


class Ledger:
    """What this machine has been changed by: read, updated and written on every call."""

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(LEDGER.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict[str, Any]) -> None:
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        tmp = LEDGER.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, LEDGER)

    def record_sysctls(self) -> None:
        """Remember the values before our first change (never the values we set)."""
        data = self._load()
        if "sysctls" in data:
            return
        values = {}
        for key in SYSCTLS:
            with contextlib.suppress(OSError):
                values[key] = (Path("/proc/sys") / key).read_text().strip()
        data["sysctls"] = values
        self._save(data)

    def add_pid(self, pid: int) -> None:
        data = self._load()
        data.setdefault("pids", []).append({"pid": pid, "cmdline": _cmdline(pid)})
        self._save(data)

    def add_created_dir(self, path: Path) -> None:
        data = self._load()
        data.setdefault("created_dirs", []).append(str(path))
        self._save(data)

    def add_work_dir(self, path: Path) -> None:
        data = self._load()
        data.setdefault("work_dirs", []).append(str(path))
        self._save(data)

    def read(self) -> dict[str, Any]:
        return self._load()

    def clear(self) -> None:
        LEDGER.unlink(missing_ok=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def sysctl_set(key: str, value: str) -> None:
    (Path("/proc/sys") / key).write_text(value)


def prepare_host() -> None:
    """The cluster's own address, forwarding between its bridges, and pod traffic allowed."""
    ledger = Ledger()
    ledger.record_sysctls()
    if _sh("ip", "link", "show", HOST_INTERFACE).returncode != 0:
        for argv in (
            # A bridge with no ports holds the address (some kernels lack the dummy type).
            ("ip", "link", "add", HOST_INTERFACE, "type", "bridge"),
            ("ip", "addr", "add", f"{HOST_ADDRESS}/32", "dev", HOST_INTERFACE),
            ("ip", "link", "set", HOST_INTERFACE, "up"),
        ):
            result = _sh(*argv)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    sysctl_set("net/ipv4/ip_forward", "1")
    with contextlib.suppress(OSError):  # br_netfilter: service traffic inside one bridge
        sysctl_set("net/bridge/bridge-nf-call-iptables", "1")
    for direction in ("-s", "-d"):
        rule = [direction, POD_CIDR, "-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]
        if _sh("iptables", "-C", "FORWARD", *rule).returncode != 0:
            _sh("iptables", "-I", "FORWARD", *rule)


def kill_recorded_pids(pids: Iterable[dict[str, Any]]) -> None:
    """SIGKILL the processes we started, if the PID still names the same command line."""
    for entry in pids:
        pid = int(entry["pid"])
        if entry.get("cmdline") and _cmdline(pid) == entry["cmdline"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def our_cgroups() -> list[Path]:
    """Every cgroup under our nodes' roots, in every v1 hierarchy (and v2), deepest first."""
    found: list[Path] = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for top in hierarchy.glob(f"{CGROUP_PREFIX}*"):
            found += [p for p in top.rglob("*") if p.is_dir()]
            found.append(top)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def kill_cgroup_tasks(timeout: float = 20.0) -> int:
    """SIGKILL every process in our nodes' cgroups (the pods' containers) until none is left."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids: set[int] = set()
        for group in our_cgroups():
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= pids
        time.sleep(0.2)
    return len(killed)


def kill_processes_naming(marker: str) -> int:
    """SIGKILL processes whose command line names `marker` (our run dir): containerd shims
    detach from whoever started them, so only their arguments tell that they are ours."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        if marker in _cmdline(int(proc.name)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                count += 1
    return count


def remove_cgroups() -> None:
    for _ in range(3):
        for group in our_cgroups():
            with contextlib.suppress(OSError):
                group.rmdir()
        if not our_cgroups():
            return
        time.sleep(0.3)


def remove_chains() -> None:
    """Delete the iptables chains kube-proxy, kubelet and the CNI plugins made (KUBE-*, CNI-*),
    first the jumps to them, then the chains; and kube-proxy's nftables tables."""
    for tool in IPTABLES:
        for table in ("filter", "nat", "mangle"):
            listed = _sh(tool, "-t", table, "-S")
            if listed.returncode != 0:
                continue
            lines = listed.stdout.splitlines()
            for line in lines:
                if line.startswith("-A ") and any(f"-j {p}" in line for p in CHAIN_PREFIXES):
                    _sh(tool, "-t", table, *_split_rule("-D" + line[2:]))
            chains = [
                line.split()[1]
                for line in lines
                if line.startswith("-N ") and line.split()[1].startswith(CHAIN_PREFIXES)
            ]
            for chain in chains:
                _sh(tool, "-t", table, "-F", chain)
            for chain in chains:
                _sh(tool, "-t", table, "-X", chain)
    for family in ("ip", "ip6"):
        _sh("nft", "delete", "table", family, "kube-proxy")


def _split_rule(rule: str) -> list[str]:
    return shlex.split(rule)


def remove_forward_rules() -> None:
    listed = _sh("iptables", "-S", "FORWARD")
    for line in listed.stdout.splitlines():
        if RULE_COMMENT in line and line.startswith("-A "):
            _sh("iptables", *_split_rule("-D" + line[2:]))


def remove_links() -> None:
    listed = _sh("ip", "-o", "link", "show")
    for line in listed.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(BRIDGE_PREFIX) or name == HOST_INTERFACE:
            _sh("ip", "link", "del", name)


def restore_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        with contextlib.suppress(OSError):
            sysctl_set(key, value)


def kube_chains() -> list[str]:
    """The KUBE-* and CNI-* iptables chains on the machine, as `tool -t table -N chain`."""
    found: list[str] = []
    for tool in ("iptables", "iptables-legacy"):
        for table in ("filter", "nat", "mangle"):
            rules = _sh(tool, "-t", table, "-S").stdout.splitlines()
            found += [
                f"{tool} -t {table} {r}"
                for r in rules
                if r.startswith("-N ") and r.split()[1].startswith(CHAIN_PREFIXES)
            ]
    return found


def foreign_kubernetes() -> str | None:
    """Why this machine's networking belongs to another Kubernetes, or None: KUBE-*/CNI-*
    chains with no cluster of ours recorded. Our teardown removes such chains, so a test
    cluster must not run beside another one."""
    if LEDGER.exists():
        return None
    chains = kube_chains()
    if not chains:
        return None
    return (
        f"this machine already runs Kubernetes networking ({len(chains)} KUBE-*/CNI-* iptables "
        "chains, e.g. " + chains[0].split()[-1] + "): a test cluster would disturb it"
    )


def leftovers(*, include_chains: bool | None = None) -> list[str]:
    """What of ours is still on the machine: the check after a run (empty when clean).

    KUBE-*/CNI-* chains count when our ledger exists, or when `include_chains` says so (a
    process that ran a cluster, which it could only start on a machine without any)."""
    if include_chains is None:
        include_chains = LEDGER.exists()
    found: list[str] = []
    found += [f"cgroup {g}" for g in our_cgroups()]
    links = _sh("ip", "-o", "link", "show").stdout.splitlines()
    found += [
        f"link {line.split(':')[1].strip()}"
        for line in links
        if line.split(":")[1].strip().startswith((BRIDGE_PREFIX, HOST_INTERFACE))
    ]
    for tool in ("iptables", "iptables-legacy"):
        for table in ("filter", "nat", "mangle"):
            rules = _sh(tool, "-t", table, "-S").stdout.splitlines()
            found += [f"{tool} -t {table} {r}" for r in rules if RULE_COMMENT in r]
    if include_chains:
        found += kube_chains()
    with open("/proc/self/mounts") as mounts:
        found += [
            f"mount {line.split()[1]}"
            for line in mounts
            if line.split()[1].startswith(str(STATE_ROOT))
        ]
    found += [
        f"process {p.name}: {_cmdline(int(p.name))[:80]}"
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and str(STATE_ROOT) in _cmdline(int(p.name))
    ]
    return found


def undo_all(work_dirs: Iterable[Path] = (), *, ours_chains: bool = False) -> None:
    """Put the machine back: processes, containers, mounts, links, rules, cgroups, sysctls.

    Safe to run at any time and more than once; it is what `modelcache dev down` and
    every cluster start run first, so a crashed run is cleaned by the next one.
    `ours_chains`: the KUBE-*/CNI-* chains are ours even with no ledger left."""
    ledger = Ledger()
    data = ledger.read()
    kill_recorded_pids(data.get("pids", []))
    kill_cgroup_tasks()
    kill_processes_naming(str(STATE_ROOT))
    dirs = [Path(d) for d in data.get("work_dirs", [])] + list(work_dirs)
    unmount_under(STATE_ROOT, *dirs)
    if data or ours_chains:  # only after a cluster of ours: never another Kubernetes' chains
        remove_chains()
    remove_forward_rules()
    remove_links()
    remove_cgroups()
    restore_sysctls(data.get("sysctls", {}))
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)
    for created in data.get("created_dirs", []):
        with contextlib.suppress(OSError):
            Path(created).rmdir()  # only if empty: never a user's files
    ledger.clear()
    shutil.rmtree(STATE_ROOT, ignore_errors=True)
