"""helm and kubectl as a user runs them against the chart, and other projects' CRDs (the
Prometheus Operator's, Argo CD's) from the Go module proxy (the test API server has none),
for the chart's and the examples' tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.testing import KubeControlPlane, Toolchain
from modelcache.testing.cache import cache_dir

CHART = Path(__file__).resolve().parents[3] / "helm" / "modelcache"
# The release whose example/prometheus-operator-crd/ holds the CRDs (a published module
# version: the proxy refuses some tags, v0.80.0 among them).
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
MONITORING_CRDS = ("podmonitors", "prometheusrules")
GO_DOWNLOAD_TIMEOUT_S = 300  # a guard against a hung proxy; a cached module takes < 1 s

# Every optional part on, with the labels kube-prometheus-stack selects by.
ALL_ON = (
    "--set=monitoring.podMonitor.enabled=true",
    "--set=monitoring.podMonitor.labels.release=kube-prometheus-stack",
    "--set=monitoring.prometheusRule.enabled=true",
    "--set=monitoring.prometheusRule.labels.release=kube-prometheus-stack",
    "--set=monitoring.prometheusRule.ruleLabels.team=ml-platform",
    "--set=monitoring.dashboard.enabled=true",
    "--set=networkPolicy.enabled=true",
    "--set=agent.priorityClassName=system-node-critical",
    "--set=agent.maxRate=100M",
)


@dataclass(frozen=True)
class Helm:
    """helm (and kubectl) pointed at the test API server, with caches of its own."""

    toolchain: Toolchain
    kube: KubeControlPlane

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kube.kubeconfig),
            "HELM_CACHE_HOME": str(self.kube.work_dir / "helm"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """helm ARGS; the caller reads returncode, stdout and stderr."""
        return subprocess.run(
            [str(self.toolchain.helm), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def template(self, release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
        """The objects `helm template` renders, in order; AssertionError with helm's own
        message when it refuses."""
        shown = self.run("template", release, str(CHART), "--namespace", namespace, *values)
        assert shown.returncode == 0, shown.stderr
        return [doc for doc in yaml.safe_load_all(shown.stdout) if doc]

    def dry_run(self, namespace: str, objects: list[dict[str, Any]], work: Path) -> str:
        """A server-side dry run of `objects` (those naming no namespace in `namespace`): the
        API server validates each against its schema (built-in or CRD) and runs admission,
        and stores nothing. kubectl's output, one line per object."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for item in objects:
            groups.setdefault(item["metadata"].get("namespace", namespace), []).append(item)
        return "".join(self._dry_run_in(ns, items, work) for ns, items in groups.items())

    def _dry_run_in(self, namespace: str, objects: list[dict[str, Any]], work: Path) -> str:
        manifest = work / f"rendered-{namespace}.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        ran = subprocess.run(
            [
                str(self.toolchain.kubectl),
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=chart-test",
                "--namespace",
                namespace,
                "-f",
                str(manifest),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        return ran.stdout


def render(
    toolchain: Toolchain, work: Path, release: str, namespace: str, *values: str
) -> list[dict[str, Any]]:
    """The objects `helm template` renders, with no cluster (helm's caches under `work`)."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(work / "helm-cache"),
        "HELM_CONFIG_HOME": str(work / "helm-config"),
    }
    shown = subprocess.run(
        [str(toolchain.helm), "template", release, str(CHART), "--namespace", namespace, *values],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    return [doc for doc in yaml.safe_load_all(shown.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects rendered, expected one"
    return found[0]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one `kind` object called `name` (the chart renders two PodMonitors and two
    NetworkPolicies: the agents' and the operator's)."""
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}, expected one"
    return found[0]


def module_dir(module: str) -> Path:
    """Where the Go module `module` ("path@version") lies, fetched from the Go module proxy
    into the toolchain's module cache (a second run reads the cache)."""
    go = shutil.which("go")
    assert go is not None, "go not found on PATH: the test toolchain is built with it"
    go_root = cache_dir() / "go"
    env = {
        **os.environ,
        "GOPATH": str(go_root),
        "GOMODCACHE": str(go_root / "mod"),
        "GOFLAGS": "-modcacherw",
        "GOWORK": "off",
    }
    ran = subprocess.run(
        [go, "mod", "download", "-json", module],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=GO_DOWNLOAD_TIMEOUT_S,
        cwd=go_root.parent,
    )
    found = json.loads(ran.stdout or "{}")
    problem = f"go mod download {module}: {found.get('Error') or ran.stderr}"
    assert ran.returncode == 0, problem
    assert "Dir" in found, problem
    return Path(found["Dir"])


def prometheus_operator_crds() -> list[dict[str, Any]]:
    """The PodMonitor and PrometheusRule CRDs as the Prometheus Operator publishes them."""
    crd_dir = module_dir(PROMETHEUS_OPERATOR) / "example" / "prometheus-operator-crd"
    return [
        yaml.safe_load((crd_dir / f"monitoring.coreos.com_{plural}.yaml").read_text())
        for plural in MONITORING_CRDS
    ]


def install_monitoring_crds(api: Any, *, timeout: float = 30.0) -> None:
    """Create the Prometheus Operator's CRDs (if not there yet) and wait until served."""
    install_served_crds(api, prometheus_operator_crds(), timeout=timeout)


def install_served_crds(api: Any, crds: list[dict[str, Any]], *, timeout: float = 30.0) -> None:
    """Create `crds` (those an earlier test of this session created are kept) and wait until
    the server serves each one's resources (a CRD is accepted before it is served)."""
    extensions = client.ApiextensionsV1Api(api)
    for crd in crds:
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as error:
            if error.status != 409:
                raise
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    for crd in crds:
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        version = next(v["name"] for v in crd["spec"]["versions"] if v.get("served", True))
        while True:
            try:
                custom.list_cluster_custom_object(group, version, plural)
                break
            except ApiException as error:
                if error.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
