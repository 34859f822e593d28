"""What a real cluster needs from the machine: root, Linux, and Debian's packages.

`cluster_unavailable()` says in one line why a cluster cannot be built here, or None;
`ensure_host_packages()` installs the missing packages with apt-get (root only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from modelcache.testing import hostnet

# Debian package -> a file it installs that we use.
HOST_PACKAGES: dict[str, str] = {
    "docker.io": "/usr/sbin/dockerd",
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "mmdebstrap": "/usr/bin/mmdebstrap",
    "iptables": "/usr/sbin/iptables",
    "iproute2": "/usr/sbin/ip",
    "util-linux": "/usr/bin/nsenter",
    "jq": "/usr/bin/jq",  # the kind daemon's runtime wrapper edits OCI specs with it
}

Report = Callable[[str], None]


class ClusterUnavailable(RuntimeError):  # noqa: N818 - reads as what it is
    """A real cluster cannot be built on this machine; the message says why, in one line."""


def missing_packages() -> list[str]:
    return [pkg for pkg, path in HOST_PACKAGES.items() if not Path(path).exists()]


def cluster_unavailable() -> str | None:
    """One line saying why this machine cannot run the kubelet cluster, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"a kubelet cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a kubelet cluster needs root (mounts, bridges, iptables, cgroups)"
    if shutil.which("go") is None:
        return "a kubelet cluster needs Go to build kubelet and friends (go not on PATH)"
    foreign = hostnet.foreign_kubernetes()
    if foreign is not None:
        return foreign
    missing = missing_packages()
    if missing and shutil.which("apt-get") is None:
        packages = ", ".join(missing)
        return f"a kubelet cluster needs Debian packages {packages} and there is no apt-get"
    return None


def ensure_host_packages(report: Report) -> None:
    """Install missing Debian packages; raise ClusterUnavailable when that is impossible."""
    reason = cluster_unavailable()
    if reason is not None:
        raise ClusterUnavailable(reason)
    missing = missing_packages()
    if not missing:
        return
    report(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise ClusterUnavailable(f"{' '.join(argv[:2])} failed: {' '.join(tail)}")
    still = missing_packages()
    if still:
        raise ClusterUnavailable(f"apt-get installed nothing for {', '.join(still)}")
