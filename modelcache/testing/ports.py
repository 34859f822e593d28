"""Free ports for the test servers, and waiting for a server to listen on one."""

import errno
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


PORT_FLOOR = 20000  # below it: well-known defaults (10250 kubelet, 10257 controller-manager...)
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A TCP port that nothing listens on right now (see `free_ports`)."""
    return free_ports(1)[0]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(n) for n in EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _bind_all(port: int, hosts: list[str]) -> list[socket.socket] | None:
    """Sockets bound to `port` on every host (one not of this namespace is skipped), or None
    when the port is taken on any of them."""
    bound: list[socket.socket] = []
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
        except OSError as error:
            sock.close()
            if error.errno == errno.EADDRNOTAVAIL and host != LOOPBACK:
                continue  # not (yet) an address here: nothing can hold the port on it
            for held in bound:
                held.close()
            return None
        bound.append(sock)
    return bound


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct ports free on loopback and on `host`, all held until every one is
    chosen. Never from the kernel's ephemeral range: there an outgoing connection's local
    port (the apiserver's to etcd, say) can take one before its server binds it."""
    low, high = _ephemeral_range()
    candidates = [p for p in range(PORT_FLOOR, 65536) if not low <= p <= high]
    hosts = [LOOPBACK] if host == LOOPBACK else [LOOPBACK, host]
    held: list[socket.socket] = []
    chosen: list[int] = []
    try:
        for port in random.sample(candidates, len(candidates)):
            bound = _bind_all(port, hosts)
            if bound is None:
                continue
            held += bound
            chosen.append(port)
            if len(chosen) == count:
                return chosen
        raise RuntimeError(f"fewer than {count} free ports outside {low}-{high}")
    finally:
        for sock in held:
            sock.close()


def is_listening(port: int, host: str = LOOPBACK) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], str | None] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `condition` until true; raise TimeoutError naming `what`.

    `alive` returns a reason string when the thing being waited on has died,
    so a crashed server fails fast with its reason instead of after the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if alive is not None:
            reason = alive()
            if reason is not None:
                raise RuntimeError(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)
