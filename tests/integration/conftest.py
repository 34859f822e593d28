"""Real services for integration tests: started once per session, stopped by PID at the end.

Logs stay in pytest's temp dir (printed on failure) so a failing run can be read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config

from modelcache.testing import KubeControlPlane, ObjectStore, Toolchain, ensure_toolchain
from modelcache.testing.crds import install_crds


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    return ensure_toolchain()


@pytest.fixture(scope="session")
def kube(
    toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeControlPlane]:
    with KubeControlPlane(toolchain=toolchain, work_dir=tmp_path_factory.mktemp("kube")) as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_client(kube: KubeControlPlane) -> Iterator[Any]:
    """A kubernetes.client.ApiClient authenticated as the cluster admin."""
    client = config.new_client_from_config(config_file=str(kube.kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="session")
def crds(kube_client: Any) -> Any:
    """modelcache's CRDs installed from crds/ (the generated files users apply) and served."""
    return install_crds(kube_client)


@pytest.fixture(scope="session")
def object_store(
    toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObjectStore]:
    with ObjectStore(weed=toolchain.weed, work_dir=tmp_path_factory.mktemp("s3")) as store:
        yield store
