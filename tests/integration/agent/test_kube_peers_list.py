"""The site's peers as an agent lists them from a real API server: pulls that begin together
(a version and its rollback target) all see the peers, none the empty list from before."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from modelcache.agent.kube import KubeClient
from modelcache.agent.kubepeers import SitePeers
from modelcache.api.k8s import API_VERSION, GROUP, NODE_CACHES, VERSION
from modelcache.testing import KubeControlPlane


@pytest.fixture
def peers_in_site(crds: client.CustomObjectsApi) -> Iterator[dict[str, str]]:
    """Two NodeCaches of zone-1 whose agents hold v1 and serve peers."""
    made: dict[str, str] = {}
    for index in range(2):
        name = f"peer-{uuid.uuid4().hex[:6]}"
        body = {
            "apiVersion": API_VERSION,
            "kind": "NodeCache",
            "metadata": {"name": name},
            "spec": {"models": []},
        }
        crds.create_cluster_custom_object(GROUP, VERSION, NODE_CACHES, body)
        url = f"http://10.88.{index}.7:9471"
        status = {
            "status": {
                "peer": {"url": url, "site": "zone-1"},
                "models": [
                    {
                        "namespace": "studio",
                        "name": "sdxl",
                        "versions": [{"version": "v1", "state": "Cached"}],
                    }
                ],
            }
        }
        crds.patch_cluster_custom_object_status(GROUP, VERSION, NODE_CACHES, name, status)
        made[name] = url
    yield made
    for name in made:
        crds.delete_cluster_custom_object(GROUP, VERSION, NODE_CACHES, name)


def test_pulls_that_start_together_all_see_the_site_s_peers(
    kube: KubeControlPlane, crds: Any, peers_in_site: dict[str, str]
) -> None:
    api = KubeClient.from_environment(kube.kubeconfig)
    site = SitePeers(api, "me", "zone-1")
    answers: list[dict[str, str]] = []
    start = threading.Barrier(8)

    def pull() -> None:
        start.wait()
        answers.append(site.members("studio/sdxl", "v1"))

    threads = [threading.Thread(target=pull) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    api.close()
    assert answers == [peers_in_site] * 8
    assert site.members("studio/sdxl", "v2") == {}, "nobody holds or wants v2"
