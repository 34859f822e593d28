"""Install modelcache's CRDs on a test API server, from the same files users apply."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.api.k8s import GROUP, MODEL_VERSIONS, NODE_CACHES, VERSION

REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"


def install_crds(
    api: client.ApiClient, directory: Path = REPO_CRDS, *, timeout: float = 30.0
) -> client.CustomObjectsApi:
    """Create every CRD in `directory` and wait until the server serves ModelVersions and
    NodeCaches (a CRD is accepted before it is served)."""
    extensions = client.ApiextensionsV1Api(api)
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            extensions.create_custom_resource_definition(document)
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    while True:
        try:
            custom.list_namespaced_custom_object(GROUP, VERSION, "default", MODEL_VERSIONS)
            custom.list_cluster_custom_object(GROUP, VERSION, NODE_CACHES)
            return custom
        except ApiException as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
