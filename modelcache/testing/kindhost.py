"""Every change a kind cluster's private Docker makes to this machine, recorded and undone.

The daemon runs from a dir of its own under /run (socket, pidfile, its containerd and
shims), puts its containers' cgroups under `mc-kind`, and kind's network is a bridge
named `mc-kind0`. Privileged kind nodes also write kubelet's sysctls on the host, and
Docker makes an empty /lib/modules for kind's bind mount. The ledger (on tmpfs) records
the dockerd PID and what the machine had before; `undo_all()` puts it back, after a
clean run or a killed one (the reaper calls it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from modelcache.testing.cache import cache_dir
from modelcache.testing.docker import mounts_under, unmount_under
from modelcache.testing.hostnet import SYSCTLS as KUBELET_SYSCTLS

STATE_ROOT = Path("/run/modelcache-kind")
LEDGER = STATE_ROOT / "ledger.json"
DOCKER_RUN = STATE_ROOT / "docker"  # the daemon's socket, exec root, containerd, shims
CGROUP_PARENT = "mc-kind"
BRIDGE = "mc-kind0"
NETWORK = "kind"  # the name kind looks for; we make it first, with our bridge and subnet
SUBNET = "10.89.0.0/24"
MODULES = Path("/lib/modules")  # kind bind-mounts it: Docker makes it when it is absent
# kubelet's (in the nodes, privileged: they reach the host's) and kube-proxy's conntrack.
SYSCTLS = (
    *KUBELET_SYSCTLS,
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "fs/inotify/max_user_watches",
    "fs/inotify/max_user_instances",
)


def data_root() -> Path:
    """The kind daemon's data root: the node image stays there between runs (a cache)."""
    return cache_dir() / "kind-docker"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def read_sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = (Path("/proc/sys") / key).read_text().strip()
    return values


class Ledger:
    """The kind run's record: read, updated and written on every call."""

    def read(self) -> dict[str, Any]:
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

    def begin(self, data_root: Path, work_dir: Path) -> None:
        """Before the first change: the sysctls and whether /lib/modules exists."""
        data = self.read()
        if "sysctls" not in data:
            data["sysctls"] = read_sysctls()
            data["modules_existed"] = MODULES.exists()
        data["data_root"] = str(data_root)
        data["work_dir"] = str(work_dir)
        self._save(data)

    def add_pid(self, pid: int) -> None:
        data = self.read()
        data.setdefault("pids", []).append({"pid": pid, "cmdline": _cmdline(pid)})
        self._save(data)


def _cgroups() -> list[Path]:
    """Our containers' cgroups in every hierarchy, deepest first."""
    found: list[Path] = []
    root = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError):
        for hierarchy in root.iterdir():
            top = hierarchy / CGROUP_PARENT
            if top.is_dir():
                found += [p for p in top.rglob("*") if p.is_dir()]
                found.append(top)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _processes() -> list[int]:
    """Processes in our cgroups, and those naming our run dir (dockerd, containerd, shims)."""
    pids: set[int] = set()
    for group in _cgroups():
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
    for proc in Path("/proc").iterdir():
        ours = proc.name.isdigit() and int(proc.name) != os.getpid()
        if ours and str(STATE_ROOT) in _cmdline(int(proc.name)):
            pids.add(int(proc.name))
    return sorted(pids)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def leftovers(data_root: Path | None = None) -> list[str]:
    """What of a kind run is still on the machine (empty when clean)."""
    found = [f"process {p}: {_cmdline(p)[:80]}" for p in _processes()]
    found += [f"cgroup {g}" for g in _cgroups()]
    if _link_exists(BRIDGE):
        found.append(f"link {BRIDGE}")
    roots = [STATE_ROOT] + ([data_root] if data_root is not None else [])
    found += [f"mount {m}" for m in mounts_under(roots)]
    if data_root is not None:
        found += [f"container {c}" for c in stored_containers(data_root)]
        if data_root.with_name(f"{data_root.name}.dropped").exists():
            found.append(f"dir {data_root.name}.dropped (a killed run's data root)")
    return found


def stored_containers(root: Path) -> list[str]:
    """Containers and volumes the daemon's data root still keeps (a node's volume holds its
    images, GBs): none after a clean stop, which removes them with the cluster."""
    found = [p.name[:12] for p in _entries(root / "containers")]
    found += [
        f"volume {p.name[:12]}"
        for p in _entries(root / "volumes")
        if p.is_dir()  # beside the volumes: metadata.db, backingFsBlockDev
    ]
    return sorted(found)


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def drop_killed_data_root(root: Path) -> None:
    """After a killed run (its daemon gone, its mounts undone) the data root still holds the
    dead nodes and their volumes (GBs): drop it all. Only the node image goes with it,
    which the next run rebuilds from its cached rootfs in about half a minute. Renamed
    away first, in one step: a next run never meets a half-deleted image store."""
    if not stored_containers(root) or mounts_under([root]):
        return
    trash = root.with_name(f"{root.name}.dropped")
    shutil.rmtree(trash, ignore_errors=True)
    root.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _kill_ours(data: dict[str, Any]) -> None:
    """The daemon by its recorded PID, then whatever of ours is left (containerd, shims)."""
    for entry in data.get("pids", []):
        pid = int(entry["pid"])
        if entry.get("cmdline") and _cmdline(pid) == entry["cmdline"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = _processes()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)


def undo_all() -> None:
    """Put the machine back after a kind run: safe at any time and more than once."""
    data = Ledger().read()
    _kill_ours(data)
    roots = [STATE_ROOT] + ([Path(data["data_root"])] if data.get("data_root") else [])
    unmount_under(*roots)
    for _ in range(5):
        for group in _cgroups():
            with contextlib.suppress(OSError):
                group.rmdir()
        if not _cgroups():
            break
        time.sleep(0.3)
    if _link_exists(BRIDGE):
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
    for key, value in data.get("sysctls", {}).items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)
    if data.get("modules_existed") is False:
        with contextlib.suppress(OSError):
            MODULES.rmdir()  # only if empty: never a user's modules
    if data.get("work_dir"):
        shutil.rmtree(Path(data["work_dir"]) / "nodes", ignore_errors=True)
    if data.get("data_root"):  # before the ledger goes: the next run waits for that
        drop_killed_data_root(Path(data["data_root"]))
    shutil.rmtree(STATE_ROOT, ignore_errors=True)
