"""The chart's alerts and dashboard checked by promtool, as Prometheus itself reads them: the
rendered PrometheusRule passes `promtool check rules`, each alert fires and stays silent as
rules_test.yaml's cases say (`promtool test rules`), and every dashboard query parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache.testing import Toolchain
from modelcache.testing.promtool import ensure_promtool
from tests.integration.deploy.chart import ALL_ON, one, render

# The first test builds promtool when the cache has none: about 5 minutes cold on 2 cores.
pytestmark = pytest.mark.timeout(1200)

RULES_TEST = Path(__file__).with_name("rules_test.yaml")
PROMTOOL_TIMEOUT_S = 120  # a guard against a hang; each run takes about a second
# Concrete values for the dashboard's Grafana variables, so that promtool parses the
# PromQL Grafana sends once it has substituted them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "2m",
    "$job": "modelcache-system/mc-agent",
    "$node": "gpu-01",
    "$operator": "modelcache-system/mc-operator",
}
LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*\w+\s*\)\s*$", re.DOTALL)


@pytest.fixture(scope="module")
def promtool() -> Path:
    return ensure_promtool()


@pytest.fixture(scope="module")
def rendered(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The chart with every monitoring part on, as the rules test expects it: release "mc"
    in "modelcache-system", ruleLabels {team: ml-platform}."""
    return render(toolchain, tmp_path_factory.mktemp("helm"), "mc", "modelcache-system", *ALL_ON)


@pytest.fixture
def rules_file(rendered: list[dict[str, Any]], tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file, rules_test.yaml beside it."""
    groups = one(rendered, "PrometheusRule")["spec"]["groups"]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    return rules


def run_promtool(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=PROMTOOL_TIMEOUT_S,
    )


def dashboard_queries(rendered: list[dict[str, Any]]) -> dict[str, str]:
    """Every PromQL query of the dashboard, by where, with Grafana's variables substituted
    (a variable's `label_values(selector, label)` becomes its selector)."""
    board: dict[str, Any] = json.loads(one(rendered, "ConfigMap")["data"]["modelcache.json"])
    found = {
        f"panel {panel['title']!r} {target['refId']}": target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            inner = LABEL_VALUES.match(query)
            found[f"variable {variable['name']}"] = inner["selector"] if inner else query
    return {where: substituted(where, expr) for where, expr in found.items()}


def substituted(where: str, query: str) -> str:
    """`query` with each Grafana variable replaced by its concrete value."""
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, f"{where}: a Grafana variable the test does not know: {query!r}"
    return query


def recording_rules(queries: dict[str, str]) -> dict[str, Any]:
    """A throwaway rules file with one recording rule per query: `promtool check rules`
    parses each expression (promtool has no offline query parser of its own)."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr, "labels": {"where": where}}
        for n, (where, expr) in enumerate(queries.items())
    ]
    return {"groups": [{"name": "dashboard", "rules": rules}]}


def test_every_alert_fires_and_stays_silent_as_its_cases_say(
    promtool: Path, rules_file: Path
) -> None:
    ran = run_promtool(promtool, "test", "rules", RULES_TEST.name, cwd=rules_file.parent)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCESS" in ran.stdout + ran.stderr


def test_each_alert_has_a_firing_and_a_silent_case(rendered: list[dict[str, Any]]) -> None:
    alerts = {
        rule["alert"]
        for group in one(rendered, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alerts, "the chart renders no alert"
    assert alerts - firing == set(), "alerts with no firing case"
    assert alerts - silent == set(), "alerts with no silent case"
    assert (firing | silent) - alerts == set(), "cases of alerts the chart does not have"


def test_promtool_accepts_the_rendered_rules(promtool: Path, rules_file: Path) -> None:
    ran = run_promtool(promtool, "check", "rules", rules_file.name, cwd=rules_file.parent)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCESS: 7 rules found" in ran.stdout, ran.stdout


def test_every_dashboard_query_parses(
    promtool: Path, rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    queries = dashboard_queries(rendered)
    checked = tmp_path / "dashboard-rules.yaml"
    checked.write_text(yaml.safe_dump(recording_rules(queries), sort_keys=False))
    ran = run_promtool(promtool, "check", "rules", checked.name, cwd=tmp_path)
    names = "\n".join(f"dashboard:query_{n} is {where}" for n, where in enumerate(queries))
    assert ran.returncode == 0, f"{ran.stdout}{ran.stderr}\n{names}"
    assert f"SUCCESS: {len(queries)} rules found" in ran.stdout, ran.stdout


def test_the_query_check_refuses_what_prometheus_cannot_parse(
    promtool: Path, tmp_path: Path
) -> None:
    """The dashboard check is not vacuous: a query Prometheus would refuse fails it."""
    queries = {"panel 'broken' A": 'sum(rate(modelcache_flips_total{job=~"x"}[2m])'}
    checked = tmp_path / "broken-rules.yaml"
    checked.write_text(yaml.safe_dump(recording_rules(queries), sort_keys=False))
    ran = run_promtool(promtool, "check", "rules", checked.name, cwd=tmp_path)
    assert ran.returncode != 0
    assert "parse error" in ran.stdout + ran.stderr
