"""ShapedLink really limits the rate, and leaves no namespace or veth behind.

A behaviour check with generous bounds (the machine is shared), not a benchmark:
bench/pull.py measures.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache.testing.netns import ShapedLink, ShapedLinkUnavailable, namespaces
from modelcache.testing.ports import free_port, is_listening, wait_until
from modelcache.testing.process import ManagedProcess

RATE_MBIT = 20.0
PAYLOAD = 4 * 1024 * 1024  # 1.7 s at 20 Mbit/s

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="ShapedLink needs root (CAP_NET_ADMIN) for netns, veth and tc"
)


def _fetch(url: str) -> float:
    """Bytes per second of one GET."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own test server
        size = len(response.read())
    assert size == PAYLOAD
    return size / (time.perf_counter() - started)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ShapedLink, str]]:
    """An unshaped link with an HTTP server inside its namespace serving PAYLOAD bytes."""
    (tmp_path / "blob").write_bytes(os.urandom(PAYLOAD))
    port = free_port()
    with ShapedLink(RATE_MBIT, shaped=False) as link:
        server = ManagedProcess(
            "http.server",
            [
                *link.exec_prefix,
                sys.executable,
                *("-m", "http.server", "--bind", link.ns_address, str(port)),
                *("--directory", str(tmp_path)),
            ],
            log_path=tmp_path / "http.log",
            stop_grace=3.0,
        )
        with server:
            wait_until(
                lambda: is_listening(port, link.ns_address),
                timeout=10,
                what="http.server in the namespace",
                alive=server.exit_reason,
            )
            yield link, f"http://{link.ns_address}:{port}/blob"


@needs_root
def test_shaping_brings_the_rate_down_to_the_configured_rate(
    served: tuple[ShapedLink, str],
) -> None:
    link, url = served
    unshaped = _fetch(url)
    link.shape()
    before = link.counters().rx_bytes
    shaped = _fetch(url)
    assert link.counters().rx_bytes - before >= PAYLOAD  # it really crossed the veth

    configured = RATE_MBIT * 1e6 / 8
    assert unshaped > 3 * configured, f"unshaped veth only {unshaped / 1e6:.1f} MB/s"
    assert 0.5 * configured < shaped < 1.1 * configured, (
        f"shaped {shaped / 1e6:.2f} MB/s, configured {configured / 1e6:.2f} MB/s"
    )


@needs_root
def test_teardown_removes_namespace_and_veth_even_after_an_error() -> None:
    link = ShapedLink(RATE_MBIT)

    def fail_inside() -> None:
        with link:
            assert link.name in namespaces()
            assert Path("/sys/class/net", link.host_if).exists()
            raise RuntimeError("failure inside the block")

    with pytest.raises(RuntimeError, match="inside"):
        fail_inside()
    assert link.name not in namespaces()
    assert not Path("/sys/class/net", link.host_if).exists()
    link.close()  # idempotent


def test_without_root_the_error_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ShapedLinkUnavailable, match="needs root"):
        ShapedLink().start()
