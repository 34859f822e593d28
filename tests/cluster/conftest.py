"""A real cluster (kubelet nodes, containerd, CNI, kube-proxy, CoreDNS) for the e2e tests.

Started once per session, stopped at the end with every change to the machine undone.
Where a cluster cannot be built (not root, no Debian packages), these tests skip with
the reason in one line, unless MODELCACHE_REQUIRE_CLUSTER=1 (as .ci/run sets): then
they fail. MODELCACHE_E2E_CLUSTER=kind runs the same tests on kind instead (`make
e2e-kind`, its node image built here; see docs/cluster.md).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client, config

from modelcache.testing.cluster import KubeletCluster
from modelcache.testing.e2e import ClusterNode, E2ECluster
from modelcache.testing.hostprep import cluster_unavailable
from modelcache.testing.kind import KindCluster, kind_unavailable
from modelcache.testing.objectstore import ObjectStore
from tests.integration.deploy.chart import install_monitoring_crds

CHART = Path(__file__).resolve().parents[2] / "helm" / "modelcache"
NODES = 2
MONITORING = (
    "--set=monitoring.podMonitor.enabled=true",
    "--set=monitoring.prometheusRule.enabled=true",
    "--set=monitoring.dashboard.enabled=true",
)
ON_KIND = os.environ.get("MODELCACHE_E2E_CLUSTER", "kubelet") == "kind"
Cluster = E2ECluster[ClusterNode]


def unavailable() -> str | None:
    """Why this session's kind of cluster cannot run here, in one line, or None."""
    return kind_unavailable() if ON_KIND else cluster_unavailable()


# The order the modules need: the kill -9 test before the session's cluster exists, the
# faults (which stop a kubelet and add a node) after everything that counts nodes.
ORDER = (
    "test_cleanup",
    "test_docs_snippets",
    "test_deploy",
    "test_least_privilege",
    "test_studio_rollout",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    reason = unavailable()
    if reason is not None and os.environ.get("MODELCACHE_REQUIRE_CLUSTER") != "1":
        # One line for all of them (in the summary), not one skip per test.
        ours = [i for i in items if Path(str(i.fspath)).is_relative_to(here)]
        if ours:
            config.hook.pytest_deselected(items=ours)
            items[:] = [i for i in items if i not in ours]
            config.stash[_SKIPPED] = f"{len(ours)} cluster tests not run: {reason}"
        return
    # A test of one harness's own (its kill -9 cleanup) is not collected on the other.
    kind = "kind" if ON_KIND else "kubelet"
    elsewhere = [
        i for i in items if (m := i.get_closest_marker("only_on")) is not None and m.args[0] != kind
    ]
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = [i for i in items if i not in elsewhere]

    def rank(item: pytest.Item) -> int:
        path = Path(str(item.fspath))
        if not path.is_relative_to(here):
            return -1
        return ORDER.index(path.stem) if path.stem in ORDER else len(ORDER)

    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.cluster)
    items.sort(key=rank)  # stable: within a module, the order of definition


_SKIPPED = pytest.StashKey[str]()


# What a failed cluster test leaves behind for whoever reads the CI log: the cluster is gone
# once the session ends, so its pods, events and logs go into the failure report.
COMPONENT = "app.kubernetes.io/component"
DIAGNOSTICS: tuple[tuple[str, ...], ...] = (
    ("get", "nodes", "-o", "wide"),
    ("get", "pods", "-A", "-o", "wide"),
    ("get", "modelversions,nodecaches", "-A", "-o", "wide"),
    ("get", "events", "-A", "--sort-by=.lastTimestamp"),
    ("get", "modelversions", "-A", "-o", "yaml"),
    ("get", "nodecaches", "-o", "yaml"),
    ("logs", "-n", "modelcache-system", "-l", f"{COMPONENT}=operator", "--tail=60", "--prefix"),
    ("logs", "-n", "modelcache-system", "-l", f"{COMPONENT}=agent", "--tail=60", "--prefix"),
    ("logs", "-n", "studio", "-l", "app=studio", "--tail=40", "--prefix"),
    ("logs", "-n", "studio", "-l", "app=studio", "--tail=40", "--prefix", "--previous"),
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    cluster = getattr(item, "funcargs", {}).get("e2e_cluster")
    if not report.failed or call.when != "call" or cluster is None:
        return
    for args in DIAGNOSTICS:
        try:
            shown = cluster.kubectl(*args, "--request-timeout=10s", check=False)
        except Exception as error:  # a report must not hide the failure it describes
            shown = f"(could not run: {error})"
        report.sections.append((f"kubectl {' '.join(args)}", shown.strip() or "(nothing)"))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    skipped = config.stash.get(_SKIPPED, None)
    if skipped is not None:
        terminalreporter.write_line(f"SKIPPED {skipped}", yellow=True)


@pytest.fixture(scope="session")
def progress(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Cluster start-up takes minutes: say what it is doing, past pytest's capture."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n[cluster] {message}", end="", flush=True)

    return say


@pytest.fixture(scope="session")
def e2e_cluster(progress: Callable[[str], None]) -> Iterator[Cluster]:
    """The session's cluster: KubeletCluster here, KindCluster with MODELCACHE_E2E_CLUSTER=kind."""
    reason = unavailable()
    if reason is not None:
        if os.environ.get("MODELCACHE_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"MODELCACHE_REQUIRE_CLUSTER=1 but {reason}")
        pytest.skip(reason)
    chosen: KindCluster | KubeletCluster = (
        KindCluster(nodes=NODES, report=progress)
        if ON_KIND
        else KubeletCluster(nodes=NODES, report=progress)
    )
    with chosen as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_api(e2e_cluster: Cluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(e2e_cluster.kubeconfig))
    yield api
    api.close()


@dataclass(frozen=True)
class ApiEndpoint:
    """The API server as a pod sees it in its kubeconfig: the URL and the CA to trust."""

    url: str
    ca_file: Path


def api_endpoint(cluster: Cluster) -> ApiEndpoint:
    """Read from the cluster's kubeconfig (a CA file on KubeletCluster, inline data on kind)."""
    entry = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    if "certificate-authority" in entry:
        return ApiEndpoint(entry["server"], Path(entry["certificate-authority"]))
    ca_file = cluster.work_dir / "apiserver-ca.crt"
    ca_file.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
    return ApiEndpoint(entry["server"], ca_file)


@pytest.fixture(scope="session")
def cluster_store(
    e2e_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObjectStore]:
    """SeaweedFS on the cluster's host address: pods reach it, nothing outside does."""
    work = tmp_path_factory.mktemp("cluster-s3")
    with ObjectStore(host=e2e_cluster.address, work_dir=work) as store:
        yield store


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str


def helm(cluster: Cluster, *args: str) -> str:
    result = subprocess.run(
        [str(cluster.helm_binary), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HELM_CACHE_HOME": str(cluster.work_dir / "helm")},
    )
    assert result.returncode == 0, f"helm {' '.join(args[:2])}: {result.stderr}"
    return result.stdout


STUDIO_NAMESPACE = "studio"  # as examples/studio/k8s names it
CREDENTIALS = "store"


@pytest.fixture(scope="session")
def studio_namespace(
    e2e_cluster: Cluster, cluster_api: client.ApiClient, cluster_store: ObjectStore
) -> str:
    """The namespace of the tests' ModelVersions, with the Secret they name: the store's
    endpoint and keys (the only Secret the chart lets agents read)."""
    core = client.CoreV1Api(cluster_api)
    core.create_namespace({"metadata": {"name": STUDIO_NAMESPACE}})
    core.create_namespaced_secret(STUDIO_NAMESPACE, cluster_store.credentials_secret(CREDENTIALS))
    return STUDIO_NAMESPACE


@pytest.fixture(scope="session")
def modelcache_release(
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    studio_namespace: str,
    progress: Callable[[str], None],
) -> Iterator[Release]:
    """helm install of helm/modelcache with the images built here and monitoring on (the
    Prometheus Operator's CRDs installed first, as kube-prometheus-stack brings them),
    waited until Ready."""
    release = Release(name="mc", namespace="modelcache-system")
    progress("Prometheus Operator CRDs (PodMonitor, PrometheusRule) for the chart's monitoring")
    install_monitoring_crds(cluster_api, timeout=60)
    progress("helm install helm/modelcache (operator x2, agent DaemonSet, monitoring)")
    started = time.monotonic()
    helm(
        e2e_cluster,
        "install",
        release.name,
        str(CHART),
        "--namespace",
        release.namespace,
        "--create-namespace",
        "--set",
        "image.pullPolicy=Never",
        "--set-json",
        "agent.credentialsSecrets=" + json.dumps({studio_namespace: [CREDENTIALS]}),
        # Pulls slow enough for the fault tests to interrupt (test_faults.py).
        "--set",
        "agent.maxRate=8M",
        "--set-json",
        'agent.extraArgs=["--concurrency=2"]',
        *MONITORING,
        "--wait",
        "--timeout=5m",
    )
    progress(f"helm install ready in {time.monotonic() - started:.0f}s")
    yield release
    helm(e2e_cluster, "uninstall", release.name, "--namespace", release.namespace, "--wait")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class PodUnreachable(Exception):  # noqa: N818 - reads as what it is
    """The API server could not reach the pod's port (not listening yet, or gone)."""


def pod_http(
    api: client.ApiClient,
    pod: Any,
    port: int,
    path: str,
    *,
    json_body: Any = None,
    timeout: float = 10,
) -> Any:
    """A request to a pod's own port through the API server's pod proxy: the pod answers,
    on any cluster (a kind cluster's pod IPs are not routable from this host). The parsed
    JSON answer, or the text where it is not JSON; PodUnreachable unless the pod said 200.
    Made with the client's own credentials (a token here, client certificates on kind)."""
    conf = api.configuration
    context = ssl.create_default_context(cafile=conf.ssl_ca_cert)
    if conf.cert_file:
        context.load_cert_chain(conf.cert_file, conf.key_file)
    headers = {"Accept": "*/*"}
    bearer = conf.auth_settings().get("BearerToken") or {}
    if bearer.get("value"):
        headers[bearer["key"]] = bearer["value"]
    body = None if json_body is None else json.dumps(json_body).encode()
    if body is not None:
        headers["Content-Type"] = "application/json"
    where = f"{pod.metadata.name}:{port}"
    url = f"{conf.host}/api/v1/namespaces/{pod.metadata.namespace}/pods/{where}/proxy/{path}"
    try:
        response = urllib3.PoolManager(ssl_context=context).request(
            "GET" if body is None else "POST",
            url,
            body=body,
            headers=headers,
            timeout=timeout,
            retries=False,
        )
    except urllib3.exceptions.HTTPError as error:
        raise PodUnreachable(f"{where}/{path}: {error}") from error
    text = response.data.decode(errors="replace")
    if response.status != 200:
        raise PodUnreachable(f"{where}/{path}: {response.status} {text[:300]}")
    try:
        return json.loads(text)
    except ValueError:
        return text


def pods(api: client.ApiClient, namespace: str, selector: str) -> list[Any]:
    listed = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector)
    return list(listed.items)
