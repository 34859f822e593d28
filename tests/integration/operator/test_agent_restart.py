"""An agent killed mid-pull (SIGKILL, or SIGTERM as a deleted pod gets) resumes the pull when it
comes back (Kubernetes mode)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelcache.agent.events import read_events
from modelcache.api.k8s import API_VERSION, GROUP, VERSION
from modelcache.testing import KubeControlPlane, ObjectStore
from modelcache.testing.fleet import node_agent
from modelcache.testing.process import ManagedProcess
from tests.integration.cli.support import make_model

SIZE = 16 * 1024 * 1024


def claimed_bytes(root: Path) -> int:
    """What the resume record claims is on disk: whole pieces and the heads of those in
    flight (the file is fetched in its 4 MiB pieces, each checked before it counts)."""
    claimed = 0
    for path in (root / "tmp").glob("*.resume.json"):
        try:
            record = json.loads(path.read_text())
            size, piece = record["size"], record["part_size"]
            whole = sum(min(piece, size - i * piece) for i in record["done"])
            claimed = max(claimed, whole + sum(record["partial"].values()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return claimed


def wait_while_running(
    agent: ManagedProcess, condition: Callable[[], bool], timeout: float
) -> None:
    """Poll `condition`; fail with the agent's log if it exits or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert agent.exit_reason() is None, agent.exit_reason()
        assert time.monotonic() < deadline, agent.log_tail()
        time.sleep(0.05)


@dataclass
class Node:
    """A NodeCache for one fake node wanting `studio/sdxl` v1 (16 MiB), and its agent."""

    name: str
    root: Path
    model: Path
    agent: Callable[[], ManagedProcess]


@pytest.fixture
def node(
    kube: KubeControlPlane,
    kube_client: Any,
    crds: client.CustomObjectsApi,
    object_store: ObjectStore,
    tmp_path: Path,
) -> Iterator[Node]:
    object_store.create_bucket("restart-models")
    url = f"oss://restart-models/base-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "OSS_ENDPOINT": object_store.endpoint, "PYTHONUNBUFFERED": "1"}
    model = make_model(tmp_path / "v1", seed=5, sizes={"unet/48.safetensors": SIZE})
    subprocess.run(
        [sys.executable, "-m", "modelcache", "publish", str(model), url, "--version", "v1"],
        env=env,
        check=True,
        capture_output=True,
    )
    node = f"gpu-{uuid.uuid4().hex[:6]}"
    root = tmp_path / "cache"
    core = client.CoreV1Api(kube_client)
    core.create_node({"metadata": {"name": node}})
    crds.create_cluster_custom_object(
        GROUP,
        VERSION,
        "nodecaches",
        {
            "apiVersion": API_VERSION,
            "kind": "NodeCache",
            "metadata": {"name": node},
            "spec": {
                "models": [
                    {
                        "namespace": "studio",
                        "name": "sdxl",
                        "source": url,
                        "versions": ["v1"],
                        "active": "v1",
                    }
                ]
            },
        },
    )

    # Slowed down (16 s for the file, its 4 pieces in parallel, the record claiming how far
    # each got every half second): a kill lands mid-pull with bytes claimed and seconds to
    # go, even on a loaded machine.
    pull_flags = ["--concurrency", "4", "--max-rate", "1M"]
    pull_flags += ["--verify-interval", "1"]

    def agent() -> ManagedProcess:
        return node_agent(
            node,
            root,
            log_path=tmp_path / "agent.log",
            env=env,
            kubeconfig=kube.kubeconfig,
            metrics_port=0,
            extra=pull_flags,
        ).start()

    yield Node(node, root, model, agent)
    core.delete_node(node)
    crds.delete_cluster_custom_object(GROUP, VERSION, "nodecaches", node)


def test_agent_restarted_mid_pull_resumes(node: Node) -> None:
    root, model, agent = node.root, node.model, node.agent
    first = agent()
    try:
        wait_while_running(first, lambda: claimed_bytes(root) >= SIZE // 4, 60)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.stop()
    assert not (root / "models/studio/sdxl/versions/v1").exists(), "nothing partial is visible"

    second = agent()
    try:
        wait_while_running(second, (root / "models/studio/sdxl/current").exists, 90)
        # The continuous re-verification finds a flipped bit and repairs it from L3.
        with (root / "models/studio/sdxl/current/unet/48.safetensors").open("r+b") as handle:
            handle.write(b"\x00" * 32)

        def repaired() -> bool:
            return any(e["event"] == "L2_REPAIR" for e in read_events(root / "events.jsonl"))

        wait_while_running(second, repaired, 90)
    finally:
        assert second.stop() == 0
    ends = [e for e in read_events(root / "events.jsonl") if e["event"] == "L3_PULL_END"]
    end = ends[0]
    assert 0 < end["bytes_downloaded"] < SIZE, "the restarted agent fetched only what was missing"
    fetched = [e for e in read_events(root / "events.jsonl") if e["event"] == "L3_PULL_START"]
    assert len(fetched) == 2, "the pull started twice: once killed, once resumed"
    assert (root / "models/studio/sdxl/current/unet/48.safetensors").read_bytes() == (
        model / "unet/48.safetensors"
    ).read_bytes()


def test_agent_stopped_with_sigterm_stops_its_pull_at_once_and_resumes(node: Node) -> None:
    """A DaemonSet pod deleted mid-pull gets SIGTERM: the agent stops its download where it
    is (it used to fetch every queued part on the way out, then lose the record) and its
    successor fetches only the rest."""
    root = node.root
    first = node.agent()
    claimed = 0
    try:
        wait_while_running(first, lambda: claimed_bytes(root) >= SIZE // 8, 60)
    finally:
        claimed = claimed_bytes(root)
        assert first.stop() == 0, "a clean exit on SIGTERM"
    records = list((root / "tmp").glob("*.resume.json"))
    assert len(records) == 1, "the partial download is kept, with its record"
    # It stops where it is, give or take what arrives while SIGTERM is on its way (3 s at
    # this rate), not after fetching every queued piece.
    assert claimed_bytes(root) <= claimed + 3 * 2**20 < SIZE, "stopped mid-pull, where it was"
    assert not [f for f in (root / "blobs").rglob("*") if f.is_file()], "nothing was adopted"

    second = node.agent()
    try:
        wait_while_running(second, (root / "models/studio/sdxl/current").exists, 90)
    finally:
        assert second.stop() == 0
    ends = [e for e in read_events(root / "events.jsonl") if e["event"] == "L3_PULL_END"]
    assert len(ends) == 1, "the stopped pull ended nothing: it is not reported as failed"
    assert 0 < ends[0]["bytes_downloaded"] < SIZE, "the successor fetched only what was missing"
    live = root / "models/studio/sdxl/current/unet/48.safetensors"
    assert live.read_bytes() == (node.model / "unet/48.safetensors").read_bytes()
