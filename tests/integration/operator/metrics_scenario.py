"""A real operator process with its metrics port on the test API server, taken through a
rollout that reaches Available and one that goes Degraded, its /metrics read after each:
for the operator's metrics test and the chart's check of every PromQL series name."""

from __future__ import annotations

import contextlib
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from modelcache.api.k8s import GROUP, VERSION
from modelcache.testing import KubeControlPlane
from modelcache.testing.ports import free_port
from modelcache.testing.process import ManagedProcess
from tests.integration.operator.support import agents_follow, apply_model_version, entry
from tests.integration.operator.test_operator_process import eventually, start_operator

METRICS_CAP = 1 << 20  # a scrape of a few ModelVersions is a few KiB


@dataclass
class Samples:
    """One /metrics answer, parsed: each sample's (name, labels) -> value."""

    text: str
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, frozenset(labels.items())))

    def phases(self, model: str) -> dict[str, float]:
        """The model's phase series: phase -> value."""
        return {
            dict(labels)["phase"]: value
            for (name, labels), value in self.values.items()
            if name == "modelcache_modelversion_phase" and dict(labels).get("model") == model
        }


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        body = answer.read(METRICS_CAP + 1)
    assert len(body) <= METRICS_CAP, "the operator's /metrics is larger than expected"
    return Samples(body.decode())


@dataclass(frozen=True)
class Operator:
    process: ManagedProcess
    metrics_port: int


@contextlib.contextmanager
def operator_with_metrics(
    kube: KubeControlPlane, log: Path, *, extra: tuple[str, ...] = ()
) -> Iterator[Operator]:
    """`modelcache operator --metrics-port P` on the test API server, until the block ends."""
    port = free_port()
    process = start_operator(
        kube, log, extra=["--metrics-port", str(port), "--metrics-host", "127.0.0.1", *extra]
    )
    try:
        eventually(lambda: _listening(port), "the operator's metrics port", process)
        yield Operator(process, port)
    finally:
        process.stop()


def _listening(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def nodes(kube_client: Any, crds: client.CustomObjectsApi, count: int = 3) -> Iterator[list[str]]:
    """`count` Node objects with a label of their own (no kubelet: API objects only)."""
    core = client.CoreV1Api(kube_client)
    pool = uuid.uuid4().hex[:6]
    names = [f"gpu-{pool}-{i}" for i in range(count)]
    for name in names:
        core.create_node({"metadata": {"name": name, "labels": {"pool": pool}}})
    try:
        yield names
    finally:
        for name in names:
            core.delete_node(name)
            with contextlib.suppress(ApiException):
                crds.delete_cluster_custom_object(GROUP, VERSION, "nodecaches", name)


@dataclass(frozen=True)
class Scrapes:
    model: str  # "namespace/name", the metrics' label
    available: Samples  # once v1 is Available everywhere
    degraded: Samples  # once v2 failed on the canary and was flipped back: Degraded


def phase_of(crds: client.CustomObjectsApi, name: str) -> str | None:
    body = crds.get_namespaced_custom_object(GROUP, VERSION, "default", "modelversions", name)
    return (body.get("status") or {}).get("phase")


def available_then_degraded(
    operator: Operator, crds: client.CustomObjectsApi, fleet: list[str]
) -> Scrapes:
    """v1 rolled out to Available (agents follow), then v2 whose pods refuse it everywhere:
    the canary fails, the rollout stops and flips back to v1, Degraded."""
    name = f"metrics-{uuid.uuid4().hex[:6]}"
    model = f"default/{name}"
    apply_model_version(
        crds,
        name,
        {
            "source": {"url": "oss://models/lora"},
            "version": "v1",
            "nodeSelector": {"matchLabels": {"pool": fleet[0].split("-")[1]}},
            "rollout": {"canary": 1, "maxUnavailable": 1},
        },
    )
    process = operator.process

    def has_entries() -> bool:
        try:
            return all(entry(crds, node, name) for node in fleet)
        except (ApiException, ValueError):
            return False

    eventually(has_entries, "NodeCache entries", process)

    def reaches(phase: str, fail: dict[str, str] | None = None) -> Samples:
        def step() -> bool:
            agents_follow(crds, fleet, name, fail=fail)
            return phase_of(crds, name) == phase

        eventually(step, f"phase {phase}", process)
        reported: list[Samples] = []

        def scraped() -> bool:
            reported[:] = [scrape(operator.metrics_port)]
            return reported[0].phases(model).get(phase) == 1

        eventually(scraped, f"/metrics reporting {model} {phase}", process)
        return reported[0]

    available = reaches("Available")
    crds.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "modelversions", name, {"spec": {"version": "v2"}}
    )
    degraded = reaches("Degraded", fail={node: "pod refused: rank 16 != 8" for node in fleet})
    return Scrapes(model, available, degraded)
