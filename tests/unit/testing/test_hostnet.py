"""The cluster harness's host checks run on a fresh machine, before `make testenv` has
installed iptables: a tool that is not there has nothing of ours to find or undo."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.testing import hostnet


def test_checks_run_on_a_machine_without_iptables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no iptables, no ip
    assert hostnet.kube_chains() == []
    assert hostnet.foreign_kubernetes() is None
    assert not [entry for entry in hostnet.leftovers(include_chains=True) if "iptables" in entry]
    hostnet.remove_forward_rules()  # nothing to remove, and no crash trying
