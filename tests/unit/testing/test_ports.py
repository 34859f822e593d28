"""Ports for the test servers come from outside the kernel's ephemeral range, so that an
outgoing connection (whose local port the kernel picks from that range) can never take
one between the choice and the server's bind: the cause of a CI failure, a SeaweedFS
filer that found its port in use on the cluster's host address."""

from __future__ import annotations

import socket

import pytest

from modelcache.testing import ports
from modelcache.testing.ports import LOOPBACK, _ephemeral_range, free_ports


def test_free_ports_are_distinct_bindable_and_never_ephemeral() -> None:
    low, high = _ephemeral_range()
    for _ in range(20):
        ports = free_ports(8)
        assert len(set(ports)) == 8
        assert not any(low <= port <= high for port in ports)
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, port))


def test_a_port_in_use_on_the_given_host_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "PORT_FLOOR", 65500)  # 36 candidates, all above the range
    monkeypatch.setattr(ports, "_ephemeral_range", lambda: (32768, 60999))
    listeners = []
    try:  # all but two taken on 127.0.0.2 only: loopback is free for every one
        for port in range(65500, 65534):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.2", port))
            listeners.append(sock)
        assert sorted(free_ports(2, "127.0.0.2")) == [65534, 65535]
    finally:
        for sock in listeners:
            sock.close()
