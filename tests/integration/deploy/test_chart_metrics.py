"""Every series the chart's alerts and dashboard query is one a real agent or the real
operator exports, with the label values they match on: checked against a scrape of an
agent's /metrics after it has pulled, flipped, called a reload that failed, and met a
corrupt file in L3, and of the operator's after a rollout reached Available and another
went Degraded on the test API server."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from modelcache.agent.events import read_events
from modelcache.sources.publish import publish
from modelcache.sources.registry import open_source
from modelcache.testing import KubeControlPlane, Toolchain
from modelcache.testing.ports import free_port
from tests.integration.cli.support import make_model
from tests.integration.deploy.chart import ALL_ON, Helm, one
from tests.integration.operator.metrics_scenario import (
    available_then_degraded,
    nodes,
    operator_with_metrics,
)
from tests.waiting import wait_for

# Labels Prometheus adds to every scraped series (the target's), not the agent.
TARGET_LABELS = frozenset({"job", "instance", "node", "namespace", "pod"})
# A Prometheus series that no component exports: whether the scrape itself succeeded.
PROMETHEUS_OWN = frozenset({"up"})
SELECTOR = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<matchers>[^}]*)\}")
MATCHER = re.compile(r'(?P<label>[a-zA-Z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>[^"]*)"')


class Scrape:
    """One /metrics answer: its series (name and labels) and its families' names."""

    def __init__(self, text: str) -> None:
        self.series: list[tuple[str, dict[str, str]]] = []
        self.names: set[str] = set()
        for family in text_string_to_metric_families(text):
            # A family with no child yet (no eviction happened) has no samples: its name is
            # the family's, with the suffix Prometheus will see.
            self.names.add(family.name + ("_total" if family.type == "counter" else ""))
            for sample in family.samples:
                self.names.add(sample.name)
                self.series.append((sample.name, sample.labels))

    def has(self, name: str, labels: dict[str, str]) -> bool:
        return any(
            n == name and all(got.get(k) == v for k, v in labels.items()) for n, got in self.series
        )

    def __or__(self, other: Scrape) -> Scrape:
        """Both scrapes' series and names, as one Prometheus holding both jobs sees them."""
        both = Scrape("")
        both.series = [*self.series, *other.series]
        both.names = self.names | other.names
        return both


def selectors(expr: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Each `name{...}` in a PromQL expression, with its equality matchers on the series'
    own labels (target labels and regex matchers left out)."""
    for found in SELECTOR.finditer(expr):
        labels = {
            m["label"]: m["value"]
            for m in MATCHER.finditer(found["matchers"])
            if m["op"] == "=" and m["label"] not in TARGET_LABELS
        }
        yield found["name"], labels


@pytest.fixture(scope="module")
def agent_scrape(tmp_path_factory: pytest.TempPathFactory) -> Scrape:
    """A standalone agent process (the same metrics as the DaemonSet's) serving two models
    from a file:// L3: one pulls and flips but its pod's reload fails (nothing listens),
    the other's file was damaged in L3 after publishing, so its pull fails verification."""
    work = tmp_path_factory.mktemp("scrape")
    l3 = work / "l3"
    sizes = {"lora/w.safetensors": 64 * 1024, "config.json": 300}
    for name, seed in (("base", 1), ("lora", 2)):
        publish(open_source(f"file://{l3}/{name}"), make_model(work / name, seed, sizes), "v1")
    damaged = l3 / "lora/v1/lora/w.safetensors"
    damaged.write_bytes(b"\0" * damaged.stat().st_size)

    port = free_port()
    closed = f"http://127.0.0.1:{free_port()}/reload"
    config = {
        "root": str(work / "cache"),
        "node": "gpu-01",
        "metrics_host": "127.0.0.1",
        "metrics_port": port,
        "poll_seconds": 0.2,
        "resync_seconds": 1,
        "verify": {"enabled": False},
        "models": [
            {
                "name": "studio/base",
                "source": f"file://{l3}/base",
                "version": "v1",
                "reload": [closed],
            },
            {"name": "studio/lora", "source": f"file://{l3}/lora", "version": "v1"},
        ],
    }
    (work / "node.yaml").write_text(yaml.safe_dump(config))
    events = work / "cache/events.jsonl"
    with (work / "agent.out").open("w") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "modelcache", "agent", "--config", str(work / "node.yaml")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def seen() -> set[str]:
            return {e["event"] for e in read_events(events)} if events.exists() else set()

        wanted = {"L3_PULL_END", "L2_FLIP", "L1_RELOAD", "L2_VERIFY_FAILED", "ERROR"}
        wait_for(lambda: wanted <= seen(), f"the agent's events {sorted(wanted)}", 120)
        url = f"http://127.0.0.1:{port}/metrics"
        return Scrape(urllib.request.urlopen(url, timeout=10).read().decode())
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)


@pytest.fixture(scope="module")
def operator_scrape(
    kube: KubeControlPlane,
    crds: client.CustomObjectsApi,
    kube_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Scrape:
    """`modelcache operator` on the test API server, once a ModelVersion's v1 reached
    Available and its v2 failed on the canary and went Degraded (flipped back)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with nodes(kube_client, crds) as fleet, operator_with_metrics(kube, log) as operator:
        return Scrape(available_then_degraded(operator, crds, fleet).degraded.text)


@pytest.fixture(scope="module")
def exported(agent_scrape: Scrape, operator_scrape: Scrape) -> Scrape:
    return agent_scrape | operator_scrape


@pytest.fixture(scope="module")
def queries(toolchain: Toolchain, kube: KubeControlPlane) -> dict[str, str]:
    """Every PromQL expression of the chart: the alerts' and the dashboard's, by where."""
    helm = Helm(toolchain, kube)
    objects = helm.template("mc", "modelcache-system", *ALL_ON)
    found = {
        f"alert {r['alert']}": r["expr"]
        for group in one(objects, "PrometheusRule")["spec"]["groups"]
        for r in group["rules"]
    }
    board: dict[str, Any] = json.loads(one(objects, "ConfigMap")["data"]["modelcache.json"])
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found[f"variable {variable['name']}"] = variable["query"]["query"]
    return found


def test_every_query_names_only_series_the_components_export(
    exported: Scrape, queries: dict[str, str]
) -> None:
    problems = []
    for where, expr in queries.items():
        named = list(selectors(expr))
        assert named or "label_values(" in expr, f"{where}: no series in {expr!r}"
        for name in re.findall(r"\bmodelcache_\w+", expr):
            if name not in exported.names:
                problems.append(f"{where}: {name} is not exported")
        for name, labels in named:
            if name in PROMETHEUS_OWN:
                continue
            if not name.startswith("modelcache_"):
                problems.append(f"{where}: {name} is not a modelcache metric")
            elif labels and not exported.has(name, labels):
                problems.append(f"{where}: no {name} series has {labels}")
    assert not problems, "\n".join(problems)


def test_the_scrapes_saw_what_the_alerts_are_about(exported: Scrape) -> None:
    """The scenarios produced each series the label check relies on (else it checks nothing)."""
    for name, labels in (
        ("modelcache_tier_requests_total", {"tier": "L2", "result": "miss"}),
        ("modelcache_errors_total", {"operation": "pull"}),
        ("modelcache_verify_failures_total", {"model": "studio/lora"}),
        ("modelcache_reloads_total", {"model": "studio/base", "result": "failed"}),
        ("modelcache_disk_bytes", {"kind": "free"}),
        ("modelcache_live_version", {"model": "studio/base", "version": "v1"}),
        ("modelcache_modelversion_phase", {"phase": "Degraded"}),
        ("modelcache_rollouts_ended_total", {"result": "reverted"}),
        ("modelcache_rollout_duration_seconds_bucket", {"result": "completed"}),
    ):
        assert exported.has(name, labels), (name, labels)


def test_the_selector_reader_sees_names_and_matchers() -> None:
    expr = 'sum(rate(a_total{job="x",tier="L2",result=~"m.*"}[5m])) / up{instance="i"}'
    assert list(selectors(expr)) == [("a_total", {"tier": "L2"}), ("up", {})]
