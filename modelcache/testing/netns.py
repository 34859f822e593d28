"""A rate-limited link to a network namespace: veth pair + `tc htb` on both ends.

Benchmarks put the object store inside the namespace so every byte of a pull
crosses a link shaped like the case's leased line (100 Mbit/s). Shaping is
plain htb: this kernel has no netem, so latency, if wanted, comes from
`modelcache.testing.delayproxy`. Needs root (CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

NAME_PREFIX = "mcbench"
SUBNET_POOL = ipaddress.IPv4Network("10.231.0.0/16")
"""Private /30s for the veth pairs: both ends are our own test hosts."""

_IF_NAME_MAX = 15  # IFNAMSIZ - 1


class ShapedLinkError(RuntimeError):
    """The link could not be built or shaped; the message says which command failed and why."""


class ShapedLinkUnavailable(ShapedLinkError):  # noqa: N818 - reads as what it is
    """This process cannot make namespaces here (not root, or no iproute2)."""


@dataclass(frozen=True)
class LinkCounters:
    """Bytes through the host end of the veth: `rx` is the download direction."""

    rx_bytes: int
    tx_bytes: int


def require_privileges() -> None:
    """Raise ShapedLinkUnavailable unless we are root and `ip` and `tc` exist."""
    if os.geteuid() != 0:
        raise ShapedLinkUnavailable(
            "a shaped link needs root (CAP_NET_ADMIN) to create a network namespace, "
            "a veth pair and tc qdiscs; run as root, e.g. with sudo"
        )
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise ShapedLinkUnavailable(f"{' and '.join(missing)} not found: install iproute2")


def _run(*argv: str) -> str:
    """Run one iproute2 command; raise ShapedLinkError with its stderr if it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ShapedLinkError(f"`{' '.join(argv)}` failed: {exc}") from exc
    if done.returncode != 0:
        raise ShapedLinkError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


def namespaces() -> list[str]:
    """Names of the named network namespaces (`ip netns list`)."""
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]


def _used_networks() -> list[ipaddress.IPv4Network]:
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", _run("ip", "-o", "-4", "addr", "show"))
    return [ipaddress.IPv4Interface(addr).network for addr in found]


def _pick_subnet() -> ipaddress.IPv4Network:
    """A /30 in the pool that no interface on the host uses, starting from our PID."""
    used = _used_networks()
    candidates = list(SUBNET_POOL.subnets(new_prefix=30))
    start = os.getpid() % len(candidates)
    for offset in range(len(candidates)):
        net = candidates[(start + offset) % len(candidates)]
        if not any(net.overlaps(other) for other in used):
            return net
    raise ShapedLinkError(f"no free /30 left in {SUBNET_POOL}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Delete `mcbench-<pid>-<n>` namespaces whose creating process is gone (a SIGKILLed run)."""
    reaped = []
    for name in namespaces():
        match = re.fullmatch(rf"{NAME_PREFIX}-(\d+)-\d+", name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(ShapedLinkError):
                _run("ip", "netns", "del", name)
                reaped.append(name)
    return reaped


class ShapedLink:
    """A namespace reachable from the host over a veth pair shaped to `rate_mbit` each way.

    `ns_address` is the server's address inside the namespace, `exec_prefix` the
    argv prefix that runs a command there. With `shaped=False` the link starts
    unshaped (fast setup, e.g. uploading test data) and `shape()` applies the rate.
    """

    _counter = 0

    def __init__(self, rate_mbit: float = 100.0, *, shaped: bool = True) -> None:
        if rate_mbit <= 0:
            raise ValueError(f"rate_mbit must be positive, got {rate_mbit}")
        self.rate_mbit = rate_mbit
        self._shape_on_start = shaped
        ShapedLink._counter += 1
        pid, n = os.getpid(), ShapedLink._counter
        self.name = f"{NAME_PREFIX}-{pid}-{n}"
        self.host_if = f"mcb{pid:x}x{n}h"[:_IF_NAME_MAX]
        self.ns_if = "mcb-ns"  # its own namespace: no clash possible
        self.host_address = ""
        self.ns_address = ""
        self.prefixlen = 30
        self.shaped = False
        self._created = False

    @property
    def exec_prefix(self) -> list[str]:
        """Prepend to an argv to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    @property
    def rate_bytes_per_s(self) -> float:
        return self.rate_mbit * 1e6 / 8

    def start(self) -> ShapedLink:
        require_privileges()
        reap_stale()
        subnet = _pick_subnet()
        host, peer = list(subnet.hosts())
        self.host_address, self.ns_address = str(host), str(peer)
        try:
            _run("ip", "netns", "add", self.name)
            self._created = True
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.name)
            _run("ip", "addr", "add", f"{host}/{self.prefixlen}", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run(
                "ip", "-n", self.name, "addr", "add", f"{peer}/{self.prefixlen}", "dev", self.ns_if
            )
            _run("ip", "-n", self.name, "link", "set", self.ns_if, "up")
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
            if self._shape_on_start:
                self.shape()
        except BaseException:
            self.close()
            raise
        return self

    def _tc(self, in_ns: bool, *args: str) -> None:
        prefix = ["ip", "netns", "exec", self.name] if in_ns else []
        _run(*prefix, "tc", *args)

    def shape(self, rate_mbit: float | None = None) -> None:
        """Limit both directions to `rate_mbit` (default: the constructor's rate).

        The namespace end's egress is the download direction (server -> host), the
        host end's egress carries requests and ACKs. quantum is set explicitly:
        htb's default (rate / r2q) is far too big at these rates and it warns.
        """
        if rate_mbit is not None:
            self.rate_mbit = rate_mbit
        self.unshape()
        rate = f"{self.rate_mbit * 1000:.0f}kbit"
        for in_ns, dev in ((True, self.ns_if), (False, self.host_if)):
            self._tc(
                in_ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10"
            )
            self._tc(
                in_ns,
                *("class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb"),
                *("rate", rate, "ceil", rate, "quantum", "60000"),
            )
        self.shaped = True

    def unshape(self) -> None:
        """Remove the htb qdiscs: the link runs at veth speed."""
        for in_ns, dev in ((True, self.ns_if), (False, self.host_if)):
            with contextlib.suppress(ShapedLinkError):
                self._tc(in_ns, "qdisc", "del", "dev", dev, "root")
        self.shaped = False

    def counters(self) -> LinkCounters:
        """Byte counters of the host end, read from sysfs (cheap enough to poll for progress)."""
        stats = Path("/sys/class/net") / self.host_if / "statistics"
        return LinkCounters(
            rx_bytes=int((stats / "rx_bytes").read_text()),
            tx_bytes=int((stats / "tx_bytes").read_text()),
        )

    def qdisc_stats(self) -> str:
        """`tc -s class show` of the download direction, for a person checking the shaping."""
        return _run(
            "ip", "netns", "exec", self.name, "tc", "-s", "class", "show", "dev", self.ns_if
        )

    def close(self) -> None:
        """Delete the host end (which takes its peer along) and the namespace; idempotent.

        The kernel destroys a deleted namespace's devices asynchronously, so wait
        until both are really gone: the next run may reuse the names.
        """
        with contextlib.suppress(ShapedLinkError):
            if Path("/sys/class/net", self.host_if).exists():
                _run("ip", "link", "del", self.host_if)
        if self._created:
            with contextlib.suppress(ShapedLinkError):
                _run("ip", "netns", "del", self.name)
            self._created = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (
                not Path("/sys/class/net", self.host_if).exists()
                and not Path("/run/netns", self.name).exists()
            ):
                break
            time.sleep(0.05)
        self.shaped = False

    def __enter__(self) -> ShapedLink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
