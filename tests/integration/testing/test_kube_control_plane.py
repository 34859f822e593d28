"""The test control plane is a real kube-apiserver + etcd: CRDs, CEL, status, watch, RBAC."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException, ForbiddenException

from modelcache.testing import KubeControlPlane, Toolchain

GROUP = "widgets.test.modelcache.io"
PLURAL = "gadgets"
VERSION = "v1"
URL_RULE_MESSAGE = "spec.url must start with s3:// or oss://"

GADGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["url"],
                                "properties": {"url": {"type": "string"}},
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.url.startsWith('s3://') || "
                                        "self.url.startsWith('oss://')",
                                        "message": URL_RULE_MESSAGE,
                                    }
                                ],
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def gadgets(kube_client: Any) -> Iterator[client.CustomObjectsApi]:
    """Install the Gadget CRD and wait until the server serves it."""
    extensions = client.ApiextensionsV1Api(kube_client)
    extensions.create_custom_resource_definition(GADGET_CRD)
    objects = client.CustomObjectsApi(kube_client)
    deadline = time.monotonic() + 30
    while True:
        crd = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            try:
                objects.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
                break
            except ApiException as error:
                if error.status != 404:
                    raise
        assert time.monotonic() < deadline, f"CRD not established: {conditions}"
        time.sleep(0.2)
    yield objects
    extensions.delete_custom_resource_definition(f"{PLURAL}.{GROUP}")


def gadget(name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": {"url": url},
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_cel_rule_rejects_invalid_object_with_its_message(gadgets: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as rejected:
        gadgets.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, gadget(unique("bad"), "ftp://example/model")
        )
    assert rejected.value.status == 422
    assert URL_RULE_MESSAGE in json.loads(rejected.value.body)["message"]

    name = unique("good")
    created = gadgets.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, gadget(name, "s3://bucket/model")
    )
    assert created["spec"]["url"] == "s3://bucket/model"


def test_status_is_written_only_through_the_subresource(gadgets: client.CustomObjectsApi) -> None:
    name = unique("status")
    gadgets.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, gadget(name, "oss://bucket/model")
    )
    gadgets.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, name, {"status": {"phase": "Ready"}}
    )
    assert gadgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)[
        "status"
    ] == {"phase": "Ready"}

    # With a status subresource, a write to the main resource leaves status alone.
    gadgets.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, name, {"status": {"phase": "Hacked"}}
    )
    current = gadgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)
    assert current["status"] == {"phase": "Ready"}


def test_watch_delivers_events(gadgets: client.CustomObjectsApi) -> None:
    listing = gadgets.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    resource_version = listing["metadata"]["resourceVersion"]
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    watcher = watch.Watch()

    def consume() -> None:
        stream = watcher.stream(
            gadgets.list_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            PLURAL,
            resource_version=resource_version,
            timeout_seconds=20,
        )
        for received, event in enumerate(stream, start=1):
            events.put((event["type"], event["object"]["metadata"]["name"]))
            if received == 2:
                return  # closes the stream: the thread ends with the test

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    name = unique("watched")
    gadgets.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, gadget(name, "s3://bucket/watched")
    )
    gadgets.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)
    seen = [events.get(timeout=20), events.get(timeout=20)]
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert seen == [("ADDED", name), ("DELETED", name)]


def test_rbac_forbids_an_unprivileged_user_until_bound(kube_client: Any) -> None:
    """An impersonated user with no bindings is forbidden; a RoleBinding grants just its scope."""
    core = client.CoreV1Api(kube_client)
    rbac = client.RbacAuthorizationV1Api(kube_client)
    namespace = unique("team")
    core.create_namespace({"metadata": {"name": namespace}})
    user = unique("jane")

    as_jane = client.ApiClient(kube_client.configuration)
    as_jane.set_default_header("Impersonate-User", user)
    jane_core = client.CoreV1Api(as_jane)
    try:
        with pytest.raises(ApiException) as forbidden:
            jane_core.list_namespaced_config_map(namespace)
        assert forbidden.value.status == 403
        assert user in json.loads(forbidden.value.body)["message"]

        # Our own Role: the built-in "view" is aggregated by kube-controller-manager, absent here.
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "configmap-reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "jane-reads-configmaps"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "configmap-reader",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            },
        )
        assert eventually_allowed(lambda: jane_core.list_namespaced_config_map(namespace))
        with pytest.raises(ApiException) as still_forbidden:
            jane_core.list_namespaced_config_map("default")
        assert still_forbidden.value.status == 403
    finally:
        as_jane.close()
        core.delete_namespace(namespace)


def eventually_allowed(call: Callable[[], object], timeout: float = 10) -> bool:
    """RBAC's authorizer cache updates asynchronously: retry a 403 for a while."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            call()
            return True
        except ForbiddenException:
            time.sleep(0.2)
    return False


def test_kubectl_and_helm_from_the_toolchain_talk_to_the_server(
    kube: KubeControlPlane, toolchain: Toolchain
) -> None:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "HELM_CACHE_HOME": str(kube.work_dir)}
    namespaces = subprocess.run(
        [str(toolchain.kubectl), "get", "namespaces", "-o", "name"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "namespace/default" in namespaces
    helm = subprocess.run(
        [str(toolchain.helm), "list", "--all-namespaces", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(helm.stdout) == []
