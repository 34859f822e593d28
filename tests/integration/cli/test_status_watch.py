"""`modelcache status --watch` through real rollouts: the real operator on a real API
server, agents stood in for by NodeCache status writes (pull progress, bytes from peers,
flips, reloads), the command's output read from its pipe as a log would."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelcache.api.k8s import GROUP, VERSION
from modelcache.testing import KubeControlPlane
from modelcache.testing.process import ManagedProcess
from tests.integration.operator.support import apply_model_version, entry
from tests.integration.operator.test_operator_process import start_operator

MiB = 1 << 20


class Output:
    """The lines a running `modelcache status --watch` printed so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while (line := self._queue.get_nowait()) is not None:
                self.lines.append(line)

    def text(self) -> str:
        self.drain()
        return "\n".join(self.lines)


@pytest.fixture
def fleet(kube_client: Any, crds: client.CustomObjectsApi) -> Iterator[list[str]]:
    """Three Node objects with a label of their own."""
    core = client.CoreV1Api(kube_client)
    pool = uuid.uuid4().hex[:6]
    names = [f"st-{pool}-{i}" for i in range(3)]
    for name in names:
        core.create_node({"metadata": {"name": name, "labels": {"pool": pool}}})
    yield names
    for name in names:
        core.delete_node(name)
        with contextlib.suppress(client.exceptions.ApiException):
            crds.delete_cluster_custom_object(GROUP, VERSION, "nodecaches", name)


@pytest.fixture
def operator(kube: KubeControlPlane, crds: Any, tmp_path: Path) -> Iterator[ManagedProcess]:
    process = start_operator(kube, tmp_path / "operator.log")
    yield process
    process.stop()


class Agents:
    """What each node's agent would report: the versions its entry asks for, with bytes
    (`pulling`: half of `version` done), and the active one reloaded unless it fails."""

    def __init__(self, api: client.CustomObjectsApi, nodes: list[str], name: str) -> None:
        self.api, self.nodes, self.name = api, nodes, name
        self.pulling: str | None = None
        self.refuse: str | None = None  # a version the pods refuse
        self.hold: str | None = None  # a version the pods have not acknowledged yet

    def held(self, node: str, version: str) -> dict[str, Any]:
        if version != self.pulling:  # as the agent reports a cached version: its size alone
            return {"version": version, "state": "Cached", "bytes": MiB}
        done = MiB // 2
        return {
            "version": version,
            "state": "Pulling",
            "bytes": MiB,
            "bytesDone": done,
            "bytesFromPeers": 0 if node == self.nodes[0] else done,  # the first from L3
        }

    def step(self) -> None:
        for node in self.nodes:
            try:
                wanted = entry(self.api, node, self.name)
            except (client.exceptions.ApiException, ValueError, KeyError):
                continue  # not given this model yet
            active = wanted.get("active")
            refused = active is not None and active == self.refuse
            reloads = []
            if refused:
                reloads = [
                    {
                        "pod": "studio-0",
                        "version": active,
                        "ok": False,
                        "reason": "LoRA rank 16 does not fit slot rank 8",
                        "at": dt.datetime.now(dt.UTC).isoformat(),
                    }
                ]
            model = {
                "namespace": "default",
                "name": self.name,
                "active": active,
                "reloadedVersion": None if refused or active == self.hold else active,
                "versions": [self.held(node, v) for v in wanted["versions"]],
                "reloads": reloads,
            }
            self.api.patch_cluster_custom_object_status(
                GROUP, VERSION, "nodecaches", node, {"status": {"models": [model]}}
            )


def until(
    condition: Callable[[], bool], what: str, agents: Agents, operator: ManagedProcess
) -> None:
    deadline = time.monotonic() + 90
    while not condition():
        assert operator.exit_reason() is None, operator.exit_reason()
        assert time.monotonic() < deadline, f"timed out: {what}\n{operator.log_tail(30)}"
        agents.step()
        time.sleep(0.2)


def watch(kube: KubeControlPlane, name: str) -> Output:
    args = ["status", name, "-n", "default", "--watch", "--interval", "0.2", "--timeout", "120"]
    process = subprocess.Popen(
        [sys.executable, "-m", "modelcache", *args, "--kubeconfig", str(kube.kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    return Output(process)


def phase(api: client.CustomObjectsApi, name: str) -> str | None:
    body = api.get_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name)
    found: str | None = (body.get("status") or {}).get("phase")
    return found


def set_version(api: client.CustomObjectsApi, name: str, version: str) -> None:
    api.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "modelversions", name, {"spec": {"version": version}}
    )


def test_status_watch_follows_a_rollout_to_available_and_a_failed_one_to_degraded(
    kube: KubeControlPlane,
    crds: client.CustomObjectsApi,
    fleet: list[str],
    operator: ManagedProcess,
) -> None:
    name = f"lora-{uuid.uuid4().hex[:6]}"
    pool = fleet[0].split("-")[1]
    apply_model_version(
        crds,
        name,
        {
            "source": {"url": "oss://models/lora"},
            "version": "v1",
            "nodeSelector": {"matchLabels": {"pool": pool}},
            "rollout": {"canary": 1, "maxUnavailable": 1},
        },
    )
    agents = Agents(crds, fleet, name)
    until(lambda: phase(crds, name) == "Available", "v1 Available", agents, operator)

    # v2: the agents pull it halfway and stop there until the command has shown that.
    agents.pulling = "v2"
    set_version(crds, name, "v2")
    output = watch(kube, name)
    try:
        until(lambda: " 50% 512.0 KiB/1.0 MiB" in output.text(), "v2 halfway", agents, operator)
        assert "pulling v2" in output.text()
        agents.pulling, agents.hold = None, "v2"  # and the canary's pods take their time
        canary = f"default/{name} v2: RollingOut (Canary, wave 1), ready 0/3, from v1"
        until(lambda: canary in output.text(), "the canary shown", agents, operator)
        reloading = f"{fleet[0]}  wave 1  active v2  reloading v2"
        until(lambda: reloading in output.text(), "the canary reloading", agents, operator)
        agents.hold = None
        until(lambda: output.process.poll() is not None, "status --watch exits", agents, operator)
    finally:
        output.process.kill()
        output.process.wait()
    text = output.text()
    assert output.process.returncode == 0, text
    assert f"wave 1 (canary): {fleet[0]}: done" in text
    assert f"wave 2: {fleet[1]}: done" in text
    assert f"wave 3: {fleet[2]}: done" in text
    assert f"default/{name} v2: Prefetching, ready 0/3, from v1" in text
    # One node pulled from L3, two from their peers: a third of the bytes came from L3.
    assert "bytes of v2 pulled: 1.5 MiB, from L3 512.0 KiB (33%), from peers 1.0 MiB" in text
    assert text.splitlines()[-1] == f"default/{name} v2: Available, 3/3 nodes serve it"
    last_block = text[[*re.finditer(r"^\[\s*\d+s\] ", text, re.MULTILINE)][-1].start() :]
    assert "v2: Available (Complete, wave 3), ready 3/3" in last_block
    assert "from L3 512.0 KiB (33%)" in last_block, "the share outlives the pulls"

    # Without --watch: one view, then done, whatever the phase.
    kubeconfig = ["--kubeconfig", str(kube.kubeconfig)]
    once = subprocess.run(
        [sys.executable, "-m", "modelcache", "status", name, *kubeconfig],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert once.returncode == 0, once.stderr
    assert once.stdout.splitlines()[0] == (
        f"default/{name} v2: Available (Complete, wave 3), ready 3/3, from v1"
    )
    assert sum("active v2  serving v2" in line for line in once.stdout.splitlines()) == 3
    missing = subprocess.run(
        [sys.executable, "-m", "modelcache", "status", "nothing-here", "--watch", *kubeconfig],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: ModelVersion default/nothing-here not found"

    # v3: the canary's pods refuse it, so the rollout stops and goes back to v2.
    agents.refuse = "v3"
    set_version(crds, name, "v3")
    output = watch(kube, name)
    try:
        until(lambda: output.process.poll() is not None, "status --watch exits", agents, operator)
    finally:
        output.process.kill()
        output.process.wait()
    text = output.text()
    assert output.process.returncode == 1, text
    assert f"wave 1 (canary): {fleet[0]}: done" in text
    assert "Stalled: RolloutReverted: v3 stopped, flipped back to v2" in text
    last = text.splitlines()[-1]
    assert last.startswith(f"default/{name} v3: Degraded, back on v2 ({fleet[0]}: reload failed")
