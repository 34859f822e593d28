"""What the chart renders, with the defaults and with every part on, is what the API server
accepts (a server-side dry run, the Prometheus Operator's CRDs installed from the Go module
proxy), and the monitoring objects select what they must: the PodMonitor the agents' pods
and port, the rules the PodMonitor's job, Grafana's sidecar the dashboard's label."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelcache.operator.tolerations import parse_node_selector, parse_tolerations
from modelcache.testing import KubeControlPlane, Toolchain
from tests.integration.deploy.chart import (
    ALL_ON,
    CHART,
    Helm,
    by_kind,
    install_monitoring_crds,
    named,
    one,
    render,
)
from tests.integration.docs.snippets import all_blocks

MONITORING_KINDS = {"PodMonitor", "PrometheusRule"}
ALERTS = {
    "ModelcacheL3ShareHigh",
    "ModelcachePullsFailing",
    "ModelcacheVerifyFailures",
    "ModelcacheDiskAboveHighWatermark",
    "ModelcacheAgentDown",
    "ModelcacheReloadsFailing",
    "ModelcacheRolloutDegraded",
}
OPERATOR_ALERTS = {"ModelcacheRolloutDegraded"}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture
def helm(toolchain: Toolchain, kube: KubeControlPlane) -> Helm:
    return Helm(toolchain, kube)


@pytest.fixture(scope="module")
def monitoring_crds(kube_client: Any) -> None:
    install_monitoring_crds(kube_client)


def fresh_namespace(kube_client: Any, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube_client).create_namespace({"metadata": {"name": name}})
    return name


def agent_pod_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    return labels


def operator_pod_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_defaults_render_the_core_objects_and_no_monitoring(
    helm: Helm, kube_client: Any, crds: Any, tmp_path: Path
) -> None:
    namespace = fresh_namespace(kube_client, "render-defaults")
    objects = helm.template("mc", namespace)

    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "DaemonSet", "PodDisruptionBudget"} <= kinds
    assert not kinds & (MONITORING_KINDS | {"ConfigMap", "NetworkPolicy"}), "all opt-in"
    agent = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert agent["tolerations"] == [GPU_TAINT], "GPU nodes' taint tolerated by default"
    assert "priorityClassName" not in agent, "the cluster's default priority"

    budget = one(objects, "PodDisruptionBudget")
    operator = one(objects, "Deployment")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= (
        operator["spec"]["template"]["metadata"]["labels"].items()
    ), "the budget covers the operator's pods"

    helm.dry_run(namespace, objects, tmp_path)

    single = helm.template("mc", namespace, "--set=operator.replicas=1")
    assert not by_kind(single, "PodDisruptionBudget"), "a budget would block every drain"


def test_every_part_on_renders_objects_the_api_server_accepts(
    helm: Helm, kube_client: Any, crds: Any, monitoring_crds: None, tmp_path: Path
) -> None:
    namespace = fresh_namespace(kube_client, "render-all")
    credentials = fresh_namespace(kube_client, "render-studio")
    objects = helm.template(
        "mc",
        namespace,
        *ALL_ON,
        "--set-json=agent.credentialsSecrets=" + json.dumps({credentials: ["oss"]}),
    )

    kinds = {o["kind"] for o in objects}
    assert {"PodMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"} <= kinds
    agent = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert agent["priorityClassName"] == "system-node-critical"
    assert "--max-rate=100M" in agent["containers"][0]["args"]

    shown = helm.dry_run(namespace, objects, tmp_path)
    for kind in ("podmonitor", "prometheusrule", "configmap", "networkpolicy", "daemonset"):
        assert re.search(
            rf"^{kind}(\.\S+)?/\S+ serverside-applied \(server dry run\)$", shown, re.M
        ), shown


def test_the_pod_monitor_scrapes_the_agents_metrics_port_with_the_release_label(
    helm: Helm,
) -> None:
    objects = helm.template("mc", "modelcache-system", *ALL_ON, "--set=agent.metricsPort=9500")
    monitor = named(objects, "PodMonitor", "mc-agent")

    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == "mc"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= agent_pod_labels(objects).items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["modelcache-system"]}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    container = one(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[endpoint["port"]] == 9500
    assert "--metrics-port=9500" in container["args"]
    assert endpoint["path"] == "/metrics"
    relabel = endpoint["relabelings"][0]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_node_name"]
    assert relabel["targetLabel"] == "node"


def test_a_second_pod_monitor_scrapes_every_operator_replicas_metrics_port(helm: Helm) -> None:
    objects = helm.template("mc", "modelcache-system", *ALL_ON, "--set=operator.metricsPort=9555")
    monitor = named(objects, "PodMonitor", "mc-operator")

    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        operator_pod_labels(objects).items()
    )
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= (
        agent_pod_labels(objects).items()
    ), "the agents have their own job"
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[endpoint["port"]] == 9555
    assert "--metrics-port=9555" in container["args"]
    assert endpoint["path"] == "/metrics"

    ran = helm.run("template", "mc", str(CHART), "--set=operator.metricsPort=0")
    assert ran.returncode != 0
    assert "/operator/metricsPort" in ran.stderr


def test_the_rules_select_the_pod_monitors_job_and_carry_the_labels_asked_for(
    helm: Helm,
) -> None:
    objects = helm.template("mc", "modelcache-system", *ALL_ON)
    rule = one(objects, "PrometheusRule")
    # The Prometheus Operator names a PodMonitor's job "<namespace>/<name>".
    monitors = {part: named(objects, "PodMonitor", f"mc-{part}") for part in ("agent", "operator")}
    jobs = {
        part: f'job="modelcache-system/{monitor["metadata"]["name"]}"'
        for part, monitor in monitors.items()
    }

    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {a["alert"] for a in alerts} == ALERTS
    for alert in alerts:
        assert alert["labels"] == {"severity": "warning", "team": "ml-platform"}
        assert alert["annotations"]["summary"]
        assert alert["annotations"]["description"]
        selectors = re.findall(r"\w+\{[^}]*\}", alert["expr"])
        assert selectors, alert["expr"]
        part = "operator" if alert["alert"] in OPERATOR_ALERTS else "agent"
        for selector in selectors:
            assert jobs[part] in selector, f"{alert['alert']}: {selector} is not the {part}'s job"
    l3 = next(a for a in alerts if a["alert"] == "ModelcacheL3ShareHigh")
    assert l3["for"] == "5m"
    assert l3["expr"].rstrip().endswith("> 0.01"), "the case's alert: above 1% for 5 minutes"
    assert "{{ $value | humanizePercentage }}" in l3["annotations"]["description"]


def test_the_rules_follow_their_values(helm: Helm) -> None:
    objects = helm.template(
        "mc",
        "ops",
        "--set=monitoring.prometheusRule.enabled=true",
        "--set-json=monitoring.prometheusRule.l3ShareThreshold=0.05",
        "--set=monitoring.prometheusRule.l3ShareFor=15m",
        '--set=monitoring.prometheusRule.agentSelector=job="kubernetes-pods"\\,app="agent"',
        '--set=monitoring.prometheusRule.operatorSelector=job="kubernetes-pods"\\,app="operator"',
        "--set=monitoring.prometheusRule.rolloutDegradedFor=15m",
    )
    alerts = {
        r["alert"]: r for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]
    }
    l3 = alerts["ModelcacheL3ShareHigh"]
    assert l3["for"] == "15m"
    assert l3["expr"].rstrip().endswith("> 0.05")
    assert "More than 5% " in l3["annotations"]["summary"]
    assert 'up{job="kubernetes-pods",app="agent"} == 0' in alerts["ModelcacheAgentDown"]["expr"]
    degraded = alerts["ModelcacheRolloutDegraded"]
    assert degraded["for"] == "15m"
    assert '{job="kubernetes-pods",app="operator",phase="Degraded"}' in degraded["expr"]


def test_the_dashboard_carries_the_sidecars_label_and_a_grafana_dashboard(helm: Helm) -> None:
    objects = helm.template("mc", "modelcache-system", "--set=monitoring.dashboard.enabled=true")
    dashboard = one(objects, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "modelcache-system"
    board = json.loads(dashboard["data"]["modelcache.json"])
    assert board["uid"] == "modelcache"
    targets = [t for p in board["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 15
    assert all(t["expr"].strip() for t in targets)

    moved = helm.template(
        "mc",
        "modelcache-system",
        "--set=monitoring.dashboard.enabled=true",
        "--set=monitoring.dashboard.labels.grafana_dashboard=null",
        "--set=monitoring.dashboard.labels.dashboards=ml",
        "--set=monitoring.dashboard.annotations.grafana_folder=modelcache",
        "--set=monitoring.dashboard.namespace=monitoring",
    )
    dashboard = one(moved, "ConfigMap")
    assert dashboard["metadata"]["labels"]["dashboards"] == "ml"
    assert "grafana_dashboard" not in dashboard["metadata"]["labels"]
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "modelcache"}
    assert dashboard["metadata"]["namespace"] == "monitoring"


def test_the_network_policy_admits_only_the_scraper_to_the_metrics_port(helm: Helm) -> None:
    objects = helm.template("mc", "modelcache-system", "--set=networkPolicy.enabled=true")
    policy = named(objects, "NetworkPolicy", "mc-agent")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= agent_pod_labels(objects).items()
    assert policy["policyTypes"] == ["Ingress"], "egress (API server, L3, reloads) untouched"
    rule, peers = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9400}]
    assert peers == {
        "from": [{"podSelector": {"matchLabels": policy["podSelector"]["matchLabels"]}}],
        "ports": [{"protocol": "TCP", "port": 9471}],
    }, "the peer port: the release's own agents only"
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ], "one peer by default: kube-prometheus-stack's Prometheus in `monitoring`"

    scraper = [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]
    objects = helm.template(
        "mc",
        "modelcache-system",
        "--set=networkPolicy.enabled=true",
        "--set=agent.metricsPort=9500",
        "--set-json=networkPolicy.metricsFrom=" + json.dumps(scraper),
        "--set=agent.peers.enabled=false",
    )
    [rule] = named(objects, "NetworkPolicy", "mc-agent")["spec"]["ingress"]
    assert rule == {"from": scraper, "ports": [{"protocol": "TCP", "port": 9500}]}, (
        "a value replaces the default peers, it is not merged into them"
    )


def test_the_operators_network_policy_admits_only_the_scraper_to_its_metrics_port(
    helm: Helm,
) -> None:
    scraper = [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]
    objects = helm.template(
        "mc",
        "modelcache-system",
        "--set=networkPolicy.enabled=true",
        "--set=operator.metricsPort=9555",
        "--set-json=networkPolicy.metricsFrom=" + json.dumps(scraper),
    )
    policy = named(objects, "NetworkPolicy", "mc-operator")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= operator_pod_labels(objects).items()
    assert policy["policyTypes"] == ["Ingress"], "egress (the API server) untouched"
    assert policy["ingress"] == [{"from": scraper, "ports": [{"protocol": "TCP", "port": 9555}]}]


def test_the_network_policy_refuses_an_empty_peer_list_which_would_admit_everyone(
    helm: Helm,
) -> None:
    ran = helm.run(
        "template",
        "mc",
        str(CHART),
        "--set=networkPolicy.enabled=true",
        "--set-json=networkPolicy.metricsFrom=[]",
    )
    assert ran.returncode != 0
    assert "/networkPolicy/metricsFrom" in ran.stderr


def test_a_helm_install_with_monitoring_on_creates_the_monitoring_objects(
    helm: Helm, kube_client: Any, crds: Any, monitoring_crds: None
) -> None:
    release = f"mon{uuid.uuid4().hex[:5]}"
    namespace = f"modelcache-{release}"
    installed = helm.run(
        "install", release, str(CHART), "--namespace", namespace, "--create-namespace", *ALL_ON
    )
    assert installed.returncode == 0, installed.stderr
    try:
        custom = client.CustomObjectsApi(kube_client)
        for plural, name in (
            ("podmonitors", f"{release}-agent"),
            ("podmonitors", f"{release}-operator"),
            ("prometheusrules", release),
        ):
            stored = custom.get_namespaced_custom_object(
                "monitoring.coreos.com", "v1", namespace, plural, name
            )
            assert stored["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        core = client.CoreV1Api(kube_client)
        dashboard = core.read_namespaced_config_map(f"{release}-dashboard", namespace)
        assert dashboard.metadata.labels["grafana_dashboard"] == "1"
        policy = client.NetworkingV1Api(kube_client).read_namespaced_network_policy(
            f"{release}-agent", namespace
        )
        assert policy.spec.ingress[0].ports[0].port == 9400
        policy = client.NetworkingV1Api(kube_client).read_namespaced_network_policy(
            f"{release}-operator", namespace
        )
        assert policy.spec.ingress[0].ports[0].port == 9470
        budget = client.PolicyV1Api(kube_client).read_namespaced_pod_disruption_budget(
            f"{release}-operator", namespace
        )
        assert budget.spec.max_unavailable == 1
    finally:
        helm.run("uninstall", release, "--namespace", namespace)
        client.CoreV1Api(kube_client).delete_namespace(namespace)


def test_the_docs_network_policy_for_the_reload_port_is_accepted(
    helm: Helm, kube_client: Any, tmp_path: Path
) -> None:
    """docs/chart.md's NetworkPolicy for the inference pods (which the chart does not
    deploy) is valid as written."""
    policies = [
        doc
        for b in all_blocks()
        if b.doc == "docs/chart.md" and b.info == "yaml"
        for doc in yaml.safe_load_all(b.text)
        if doc and doc.get("kind") == "NetworkPolicy"
    ]
    assert policies, "docs/chart.md shows no NetworkPolicy"
    namespace = fresh_namespace(kube_client, "docs-policy")
    for policy in policies:
        policy["metadata"]["namespace"] = namespace
    helm.dry_run(namespace, policies, tmp_path)


def test_fan_out_is_on_with_a_generated_token_mounted_into_every_agent(helm: Helm) -> None:
    objects = helm.template("mc", "modelcache-system")
    [secret] = [o for o in by_kind(objects, "Secret") if o["metadata"]["name"] == "mc-peer-token"]
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) == 48
    assert token.isalnum()
    again = helm.template("mc", "modelcache-system")
    [other] = [o for o in by_kind(again, "Secret") if o["metadata"]["name"] == "mc-peer-token"]
    assert other["data"]["token"] != secret["data"]["token"], "random per render (no cluster)"

    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    agent = pod["containers"][0]
    assert "--peer-token-file=/etc/modelcache/peer/token" in agent["args"]
    assert "--site-label=topology.kubernetes.io/zone" in agent["args"]
    assert {"name": "peers", "containerPort": 9471} in agent["ports"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in agent[
        "env"
    ]
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "peer-token")
    assert mount == {"name": "peer-token", "mountPath": "/etc/modelcache/peer", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "peer-token")
    assert volume["secret"] == {"secretName": "mc-peer-token", "defaultMode": 0o400}

    kept = helm.template("mc", "modelcache-system", "--set=agent.peers.existingSecret=fleet-token")
    assert not [o for o in by_kind(kept, "Secret") if o["metadata"]["name"] == "mc-peer-token"]
    volume = next(
        v
        for v in one(kept, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "peer-token"
    )
    assert volume["secret"]["secretName"] == "fleet-token"

    off = helm.template("mc", "modelcache-system", "--set=agent.peers.enabled=false")
    agent = one(off, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in agent["args"] if a.startswith("--peer")]
    assert not [o for o in by_kind(off, "Secret") if o["metadata"]["name"] == "mc-peer-token"]


def operator_told_tolerations(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tolerations the operator's --agent-tolerations carries, as it parses them."""
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    (given,) = [a for a in args if a.startswith("--agent-tolerations=")]
    text = given.removeprefix("--agent-tolerations=")
    parse_tolerations(text)  # the operator would start with it
    told: list[dict[str, Any]] = json.loads(text)
    return told


def test_the_operator_is_told_exactly_the_agents_tolerations(
    toolchain: Toolchain, tmp_path: Path
) -> None:
    """So it leaves out the Nodes the agent DaemonSet never runs on (a kind control plane),
    whatever the tolerations hold: YAML's and the shell's special characters included."""
    defaults = render(toolchain, tmp_path, "mc", "modelcache-system")
    assert operator_told_tolerations(defaults) == [GPU_TAINT]

    awkward = [
        {
            "key": "dedicated",
            "operator": "Equal",
            "value": 'ml: a #b "q" <x>&$(id)',
            "effect": "NoSchedule",
        },
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
    ]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"agent": {"tolerations": awkward}}))
    custom = render(toolchain, tmp_path, "mc", "modelcache-system", "-f", str(values))
    agent = one(custom, "DaemonSet")["spec"]["template"]["spec"]
    assert agent["tolerations"] == awkward
    assert operator_told_tolerations(custom) == awkward

    values.write_text(yaml.safe_dump({"agent": {"tolerations": []}}))
    none = render(toolchain, tmp_path, "mc", "modelcache-system", "-f", str(values))
    assert operator_told_tolerations(none) == [], "no toleration: every tainted Node left out"


def operator_told_node_selector(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The labels the operator's --agent-node-selector carries, as it parses them."""
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    (given,) = [a for a in args if a.startswith("--agent-node-selector=")]
    return parse_node_selector(given.removeprefix("--agent-node-selector="))


def test_the_operator_is_told_exactly_the_agents_node_selector(
    toolchain: Toolchain, tmp_path: Path
) -> None:
    """So it leaves out the Nodes the agent DaemonSet is not placed on by labels."""
    defaults = render(toolchain, tmp_path, "mc", "modelcache-system")
    assert operator_told_node_selector(defaults) == {}, "the default: every Node"
    gpu = {"nvidia.com/gpu.present": "true", "pool": 'a "b" #c'}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"agent": {"nodeSelector": gpu}}))
    custom = render(toolchain, tmp_path, "mc", "modelcache-system", "-f", str(values))
    assert one(custom, "DaemonSet")["spec"]["template"]["spec"]["nodeSelector"] == gpu
    assert operator_told_node_selector(custom) == gpu
