"""Kubernetes mode: a credentials Secret whose endpoint carries user:password@ is refused by
the node agent, which says which Secret key is wrong, and the password appears nowhere the
cluster publishes it: the NodeCache status (read back from the apiserver), the agent's
events.jsonl, its log, and its /metrics."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelcache.api.k8s import API_VERSION, GROUP, VERSION
from modelcache.sources import Credentials, open_source, publish
from modelcache.testing import KubeControlPlane, ObjectStore
from modelcache.testing.fleet import node_agent
from modelcache.testing.objectstore import ACCESS_KEY, SECRET_KEY
from modelcache.testing.ports import free_port
from modelcache.testing.process import ManagedProcess
from tests.integration.cli.support import make_model

PASSWORD = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"
ENDPOINT_VARIABLES = ("OSS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def leaks(text: str) -> bool:
    """The password, or any piece of it a parser cut at its `/` or `+`, is in `text`."""
    flat = re.sub(r"\s+", "", text)
    return any(piece in flat for piece in [PASSWORD, *re.split(r"[/+]", PASSWORD)])


@pytest.fixture
def no_endpoint_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent has only the Secret to go by."""
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def published_version(store: ObjectStore, scheme: str, work: Path) -> str:
    bucket = f"sec-{uuid.uuid4().hex[:8]}"
    store.create_bucket(bucket)
    url = f"{scheme}://{bucket}/lora"
    clean = Credentials(endpoint=store.endpoint)
    publish(open_source(url, clean), make_model(work / "v1", seed=7, sizes={"w.bin": 4096}), "v1")
    return url


def create_secret(core: client.CoreV1Api, key: str, endpoint: str) -> str:
    name = f"store-{uuid.uuid4().hex[:6]}"
    values = {key: endpoint}
    if key.startswith("AWS_"):
        values |= {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    core.create_namespaced_secret("default", {"metadata": {"name": name}, "data": data})
    return name


def want(crds: client.CustomObjectsApi, node: str, url: str, secret: str) -> None:
    model = {
        "namespace": "default",
        "name": "lora",
        "source": url,
        "versions": ["v1"],
        "active": "v1",
        "credentialsSecret": {"name": secret, "namespace": "default"},
    }
    body = {
        "apiVersion": API_VERSION,
        "kind": "NodeCache",
        "metadata": {"name": node},
        "spec": {"models": [model]},
    }
    crds.create_cluster_custom_object(GROUP, VERSION, "nodecaches", body)


def settled_status(
    crds: client.CustomObjectsApi, node: str, agent: ManagedProcess
) -> dict[str, Any]:
    """The NodeCache status once v1 has failed or been cached (whichever comes first)."""
    deadline = time.monotonic() + 120
    while True:
        assert agent.exit_reason() is None, agent.exit_reason()
        body = crds.get_cluster_custom_object(GROUP, VERSION, "nodecaches", node)
        status: dict[str, Any] = body.get("status") or {}
        states = [v.get("state") for m in status.get("models") or [] for v in m["versions"]]
        if "Failed" in states or "Cached" in states:
            return status
        assert time.monotonic() < deadline, f"v1 never settled: {status}\n{agent.log_tail()}"
        time.sleep(0.1)


@pytest.mark.usefixtures("no_endpoint_in_env")
@pytest.mark.parametrize(("scheme", "key"), [("oss", "OSS_ENDPOINT"), ("s3", "AWS_ENDPOINT_URL")])
def test_a_secret_endpoint_with_a_password_is_refused_and_never_published(
    kube: KubeControlPlane,
    kube_client: Any,
    crds: client.CustomObjectsApi,
    object_store: ObjectStore,
    node: str,
    tmp_path: Path,
    scheme: str,
    key: str,
) -> None:
    url = published_version(object_store, scheme, tmp_path)
    endpoint = object_store.endpoint.replace("://", f"://modelcache:{PASSWORD}@", 1)
    secret = create_secret(client.CoreV1Api(kube_client), key, endpoint)
    want(crds, node, url, secret)
    root, port = tmp_path / "cache", free_port()
    agent = node_agent(
        node,
        root,
        log_path=tmp_path / "agent.log",
        env={"PYTHONUNBUFFERED": "1"},
        kubeconfig=kube.kubeconfig,
        metrics_port=port,
    ).start()
    try:
        status = settled_status(crds, node, agent)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
    finally:
        assert agent.stop() == 0

    assert not leaks(json.dumps(status)), f"the password is in NodeCache status: {status}"
    (model,) = status["models"]
    assert [v["state"] for v in model["versions"]] == ["Failed"], "refused, not pulled"
    assert f"secret default/{secret} key {key} " in model["lastError"]
    assert "access-key settings" in model["lastError"]
    assert not leaks(metrics), "the password is in /metrics"
    assert 'modelcache_errors_total{operation="pull"}' in metrics
    events = (root / "events.jsonl").read_text()
    assert not leaks(events), "the password is in events.jsonl"
    assert f"key {key} " in events, "the refusal is an event"
    log = (tmp_path / "agent.log").read_text()
    assert not leaks(log), "the password is in the agent's log"
    assert not (root / "models/default/lora/versions/v1").exists()
