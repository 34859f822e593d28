"""A real cluster (kubelet nodes, containerd, CNI, kube-proxy, CoreDNS) for the e2e tests.

Started once per session, stopped at the end with every change to the machine undone.
Where a cluster cannot be built (not root, no Debian packages), these tests skip with
the reason in one line, unless MODELCACHE_REQUIRE_CLUSTER=1 (as .ci/run sets): then
they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from modelcache.testing.cluster import KubeletCluster
from modelcache.testing.hostnet import HOST_ADDRESS
from modelcache.testing.hostprep import cluster_unavailable
from modelcache.testing.objectstore import ObjectStore

CHART = Path(__file__).resolve().parents[2] / "helm" / "modelcache"
NODES = 2


# The order the modules need: the kill -9 test before the session's cluster exists, the
# faults (which stop a kubelet and add a node) after everything that counts nodes.
ORDER = ("test_cleanup", "test_deploy", "test_least_privilege", "test_studio_rollout")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    reason = cluster_unavailable()
    if reason is not None and os.environ.get("MODELCACHE_REQUIRE_CLUSTER") != "1":
        # One line for all of them (in the summary), not one skip per test.
        ours = [i for i in items if Path(str(i.fspath)).is_relative_to(here)]
        if ours:
            config.hook.pytest_deselected(items=ours)
            items[:] = [i for i in items if i not in ours]
            config.stash[_SKIPPED] = f"{len(ours)} cluster tests not run: {reason}"
        return

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
    cluster = getattr(item, "funcargs", {}).get("kubelet_cluster")
    if not report.failed or call.when != "call" or not isinstance(cluster, KubeletCluster):
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
def kubelet_cluster(progress: Callable[[str], None]) -> Iterator[KubeletCluster]:
    reason = cluster_unavailable()
    if reason is not None:
        if os.environ.get("MODELCACHE_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"MODELCACHE_REQUIRE_CLUSTER=1 but {reason}")
        pytest.skip(reason)
    with KubeletCluster(nodes=NODES, report=progress) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_api(kubelet_cluster: KubeletCluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubelet_cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def cluster_store(
    kubelet_cluster: KubeletCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObjectStore]:
    """SeaweedFS on the cluster's host address: pods reach it, nothing outside does."""
    with ObjectStore(host=HOST_ADDRESS, work_dir=tmp_path_factory.mktemp("cluster-s3")) as store:
        yield store


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str


def helm(cluster: KubeletCluster, *args: str) -> str:
    assert cluster.toolchain is not None
    result = subprocess.run(
        [str(cluster.toolchain.helm), f"--kubeconfig={cluster.kubeconfig}", *args],
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
    kubelet_cluster: KubeletCluster, cluster_api: client.ApiClient, cluster_store: ObjectStore
) -> str:
    """The namespace of the tests' ModelVersions, with the Secret they name: the store's
    endpoint and keys (the only Secret the chart lets agents read)."""
    core = client.CoreV1Api(cluster_api)
    core.create_namespace({"metadata": {"name": STUDIO_NAMESPACE}})
    core.create_namespaced_secret(STUDIO_NAMESPACE, cluster_store.credentials_secret(CREDENTIALS))
    return STUDIO_NAMESPACE


@pytest.fixture(scope="session")
def modelcache_release(
    kubelet_cluster: KubeletCluster, studio_namespace: str, progress: Callable[[str], None]
) -> Iterator[Release]:
    """helm install of helm/modelcache with the images built here, waited until Ready."""
    release = Release(name="mc", namespace="modelcache-system")
    progress("helm install helm/modelcache (operator x2, agent DaemonSet)")
    started = time.monotonic()
    helm(
        kubelet_cluster,
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
        "--wait",
        "--timeout=5m",
    )
    progress(f"helm install ready in {time.monotonic() - started:.0f}s")
    yield release
    helm(kubelet_cluster, "uninstall", release.name, "--namespace", release.namespace, "--wait")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pods(api: client.ApiClient, namespace: str, selector: str) -> list[Any]:
    listed = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector)
    return list(listed.items)
