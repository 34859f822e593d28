"""Two operator replicas (the chart's default): one leads, the other waits; when the
leader dies without a goodbye (kill -9), the standby takes over and carries on."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.api.k8s import GROUP, VERSION
from modelcache.testing import KubeControlPlane
from modelcache.testing.process import ManagedProcess
from tests.integration.operator.support import apply_model_version, entry
from tests.integration.operator.test_operator_process import eventually, start_operator

LIFETIME = 6  # seconds; the chart's default is 60


def replica(kube: KubeControlPlane, peering: str, log: Path) -> ManagedProcess:
    """Started as the chart starts each replica: no --priority (a random one is drawn)."""
    extra = ["--peering", peering, "--peering-lifetime", str(LIFETIME)]
    return start_operator(kube, log, extra=extra, name=f"operator {log.stem}")


def peers(crds: client.CustomObjectsApi, peering: str) -> dict[str, object]:
    """The replicas kopf has recorded in the ClusterKopfPeering (id -> priority, lifetime)."""
    try:
        body = crds.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    except ApiException:
        return {}
    return dict(body.get("status") or {})


def priority(process: ManagedProcess) -> int:
    """The priority the replica drew, from its first log line."""
    found = re.search(r"priority (\d+)", process.log_path.read_text())
    assert found, process.log_tail(5)
    return int(found.group(1))


def paused(process: ManagedProcess) -> bool:
    """kopf starts paused and logs each resume and pause: paused unless it last resumed."""
    text = process.log_path.read_text()
    resumed = text.rfind("Resuming operations")
    return resumed == -1 or text.rfind("Pausing operations") > resumed


def quiet(process: ManagedProcess, seconds: float = 1.0) -> bool:
    """True once the process's log has not grown for `seconds`."""
    before = process.log_path.stat().st_size
    time.sleep(seconds)
    return process.log_path.stat().st_size == before


def held(crds: client.CustomObjectsApi, node: str, name: str) -> list[str]:
    """The versions the node is told to hold for `name` (none yet: [])."""
    try:
        return list(entry(crds, node, name).get("versions") or [])
    except (ApiException, ValueError):
        return []


def test_one_replica_leads_and_a_standby_takes_over_after_a_kill(
    kube: KubeControlPlane, crds: client.CustomObjectsApi, fleet: list[str], tmp_path: Path
) -> None:
    peering = f"modelcache-{uuid.uuid4().hex[:6]}"
    replicas = [replica(kube, peering, tmp_path / f"replica-{i}.log") for i in range(2)]
    try:
        eventually(
            lambda: len(peers(crds, peering)) == 2,
            "both replicas in the peering record",
            replicas[0],
        )
        leader = max(replicas, key=priority)
        (standby,) = [r for r in replicas if r is not leader]
        assert priority(leader) != priority(standby), "replicas started alike must not tie"
        # kopf may let the standby act for a moment at startup, until it sees the leader,
        # and events already in its pipeline finish after it pauses: wait for it to go quiet.
        eventually(lambda: paused(standby), "the lower-priority replica to pause", standby)
        eventually(lambda: quiet(standby), "the paused replica to go quiet", standby)
        handled_before = len(standby.log_path.read_text())

        name = f"lora-{uuid.uuid4().hex[:6]}"
        pool = fleet[0].split("-")[1]
        apply_model_version(
            crds,
            name,
            {
                "source": {"url": "oss://models/lora"},
                "version": "v1",
                "nodeSelector": {"matchLabels": {"pool": pool}},
            },
        )
        eventually(
            lambda: all(held(crds, n, name) for n in fleet),
            "the leader to write every NodeCache",
            leader,
        )
        # Paused, the standby handles nothing (kopf logs a line per handled event).
        assert "Handler '" not in standby.log_path.read_text()[handled_before:]
        assert "Handler '" in leader.log_tail(400)

        assert leader.pid is not None
        os.kill(leader.pid, signal.SIGKILL)  # no goodbye: its peering record must expire
        crds.patch_namespaced_custom_object(
            GROUP, VERSION, "default", "modelversions", name, {"spec": {"version": "v2"}}
        )
        eventually(
            lambda: all("v2" in held(crds, n, name) for n in fleet),
            "the standby to take over and prefetch v2 everywhere",
            standby,
            timeout=LIFETIME * 10,
        )
        assert "Resuming operations" in standby.log_tail(400)
    finally:
        for process in replicas:
            process.stop()
