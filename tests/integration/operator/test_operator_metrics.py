"""The operator's /metrics as a real operator process serves them on a real API server: the
phase of a ModelVersion once Available and once Degraded, the rollouts it counted and
timed, a deleted ModelVersion's series gone, and a standby replica reporting no phase."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from modelcache.api.k8s import GROUP, VERSION
from modelcache.testing import KubeControlPlane
from tests.integration.operator.metrics_scenario import (
    available_then_degraded,
    nodes,
    operator_with_metrics,
    scrape,
)
from tests.integration.operator.test_operator_process import eventually

PHASES = {"Pending", "Prefetching", "RollingOut", "Available", "Degraded", "RolledBack"}


def test_the_operator_reports_each_rollout_it_runs(
    kube: KubeControlPlane, crds: client.CustomObjectsApi, kube_client: Any, tmp_path: Path
) -> None:
    with (
        nodes(kube_client, crds) as fleet,
        operator_with_metrics(kube, tmp_path / "operator.log") as operator,
    ):
        scrapes = available_then_degraded(operator, crds, fleet)
        model = scrapes.model

        available = scrapes.available
        assert available.phases(model) == {p: float(p == "Available") for p in PHASES}
        assert available.get("modelcache_rollouts_started_total") == 1
        assert available.get("modelcache_rollouts_ended_total", result="completed") == 1
        assert available.get("modelcache_rollout_duration_seconds_count", result="completed") == 1
        assert available.get("modelcache_rollouts_ended_total", result="reverted") == 0

        degraded = scrapes.degraded
        assert degraded.phases(model) == {p: float(p == "Degraded") for p in PHASES}
        assert degraded.get("modelcache_rollouts_started_total") == 2
        assert degraded.get("modelcache_rollouts_ended_total", result="reverted") == 1, (
            "v2 failed on its canary and the canary went back to v1"
        )
        assert degraded.get("modelcache_rollout_duration_seconds_count", result="reverted") == 1
        assert degraded.get("modelcache_rollouts_ended_total", result="completed") == 1
        for reason in ("api", "invalid_spec", "other"):
            errors = degraded.get("modelcache_operator_reconcile_errors_total", reason=reason)
            assert errors is not None, reason

        name = model.split("/", 1)[1]
        crds.delete_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name)
        eventually(
            lambda: not scrape(operator.metrics_port).phases(model),
            f"{model}'s phase series gone once it is deleted",
            operator.process,
        )


def test_a_standby_replica_reports_no_phase_and_counts_nothing(
    kube: KubeControlPlane, crds: client.CustomObjectsApi, kube_client: Any, tmp_path: Path
) -> None:
    """Two replicas on one peering: the leader (the higher priority) reports the
    ModelVersion's phase; the standby, paused by kopf, reports none and counts no rollout."""
    peering = ("--peering", f"metrics-{uuid.uuid4().hex[:6]}")
    with (
        nodes(kube_client, crds) as fleet,
        operator_with_metrics(
            kube, tmp_path / "leader.log", extra=(*peering, "--priority", "100")
        ) as leader,
        operator_with_metrics(
            kube, tmp_path / "standby.log", extra=(*peering, "--priority", "1")
        ) as standby,
    ):
        scrapes = available_then_degraded(leader, crds, fleet)
        assert scrapes.degraded.phases(scrapes.model)["Degraded"] == 1

        def standby_reports_nothing() -> bool:
            seen = scrape(standby.metrics_port)
            return not seen.phases(scrapes.model)

        eventually(standby_reports_nothing, "the standby without phase series", standby.process)
        seen = scrape(standby.metrics_port)
        assert seen.get("modelcache_rollouts_started_total") == 0
        assert seen.get("modelcache_rollouts_ended_total", result="reverted") == 0
