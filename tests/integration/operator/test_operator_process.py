"""`modelcache operator` as a process on a real API server: apply, roll out, restart, delete."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.api.k8s import GROUP, VERSION
from modelcache.testing import KubeControlPlane
from modelcache.testing.fleet import modelcache_process
from modelcache.testing.process import ManagedProcess
from tests.integration.operator.support import agents_follow, apply_model_version, entry


def start_operator(
    kube: KubeControlPlane, log: Path, *, extra: Sequence[str] = (), name: str = "operator"
) -> ManagedProcess:
    """`modelcache operator` against the test API server, started. Its own peering unless
    `extra` names one: a replica killed by an earlier test must not pause this one."""
    if "--peering" not in extra:
        extra = ["--peering", f"test-{uuid.uuid4().hex[:8]}", *extra]
    return modelcache_process(
        name,
        ["operator", "--kubeconfig", str(kube.kubeconfig), *extra],
        log_path=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stop_grace=15,
    ).start()


@pytest.fixture
def operator_log(tmp_path: Path) -> Path:
    return tmp_path / "operator.log"


@pytest.fixture
def operator(kube: KubeControlPlane, crds: Any, operator_log: Path) -> Iterator[ManagedProcess]:
    process = start_operator(kube, operator_log)
    yield process
    process.stop()


def eventually(
    condition: Callable[[], bool], what: str, process: ManagedProcess, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        reason = process.exit_reason()
        assert reason is None, reason
        assert time.monotonic() < deadline, f"timed out: {what}\n{process.log_tail(40)}"
        time.sleep(0.2)


def status_of(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    body = api.get_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name)
    return body.get("status") or {}


def has_entry(api: client.CustomObjectsApi, node: str, name: str) -> bool:
    try:
        cache = api.get_cluster_custom_object(GROUP, VERSION, "nodecaches", node)
    except ApiException:
        return False
    return any(m["name"] == name for m in cache["spec"].get("models", []))


def test_operator_rolls_out_resumes_after_restart_and_cleans_up(
    kube: KubeControlPlane,
    crds: client.CustomObjectsApi,
    fleet: list[str],
    operator: ManagedProcess,
    operator_log: Path,
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
    eventually(lambda: all(has_entry(crds, n, name) for n in fleet), "NodeCache entries", operator)

    def follow_until(phase: str) -> None:
        def step() -> bool:
            agents_follow(crds, fleet, name)
            return status_of(crds, name).get("phase") == phase

        eventually(step, f"phase {phase}", operator)

    follow_until("Available")
    assert status_of(crds, name)["ready"] == "4/4"

    # A new version: let the canary flip, then restart the operator mid-rollout.
    crds.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "modelversions", name, {"spec": {"version": "v2"}}
    )

    def canary_flipped() -> bool:
        agents_follow(crds, fleet, name)
        return any(entry(crds, n, name).get("active") == "v2" for n in fleet)

    eventually(canary_flipped, "canary flip", operator)
    operator.stop()
    rollout = status_of(crds, name)["rollout"]
    assert rollout["target"] == "v2"
    assert rollout["phase"] in ("Canary", "Waves")
    restarted = start_operator(kube, operator_log)
    try:
        follow_until_available = lambda: (  # noqa: E731
            agents_follow(crds, fleet, name) or status_of(crds, name).get("phase") == "Available"
        )
        eventually(follow_until_available, "rollout to finish after restart", restarted)
        status = status_of(crds, name)
        assert status["currentVersion"] == "v2"
        assert [h["version"] for h in status["history"]] == ["v1", "v2"]

        crds.delete_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name)
        eventually(
            lambda: not any(has_entry(crds, n, name) for n in fleet), "NodeCache cleanup", restarted
        )

        def gone() -> bool:
            try:
                crds.get_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name)
            except ApiException as error:
                return error.status == 404
            return False

        eventually(gone, "finalizer released", restarted)
    finally:
        restarted.stop()
