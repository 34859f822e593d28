"""One node policy under both agents: each test runs against the standalone agent (node.yaml)
and the Kubernetes agent (a NodeCache on the real apiserver), with SeaweedFS as L3.

What is asserted is what a user sees: the `current` link, the files and blobs on disk,
and the state each agent reports (its NodeCache status, or its reconciler's report).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from kubernetes import client

from modelcache.agent.config import load_config
from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import EventLog
from modelcache.agent.kube import KubeClient
from modelcache.agent.kubeagent import KubeAgent
from modelcache.agent.standalone import StandaloneAgent, desired
from modelcache.api.k8s import GROUP, VERSION
from modelcache.api.nodecache import NodeModel
from modelcache.sources import PullOptions, open_source, publish
from modelcache.store import Layout, Store
from modelcache.testing import KubeControlPlane, ObjectStore, Toolchain
from tests.integration.cli.support import make_model
from tests.waiting import wait_for

NAMESPACE, NAME = "studio", "lora"
SHARED = "vae/config.json"  # the same bytes in every version: one blob


class Node(Protocol):
    root: Path

    def want(
        self, active: str, prefetch: tuple[str, ...] = (), pins: tuple[str, ...] = ()
    ) -> None: ...

    def states(self) -> dict[str, str]: ...

    def close(self) -> None: ...


class StandaloneNode:
    """`modelcache agent --config node.yaml`, in a thread of this process."""

    def __init__(self, work: Path, url: str, *, retain: int, rate: float | None) -> None:
        self.root = work / "cache"
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / "node.yaml"
        self.url, self.retain = url, retain
        self.config: dict[str, Any] = {
            "root": str(self.root),
            "node": "gpu-standalone",
            "metrics_port": None,
            "poll_seconds": 0.1,
            "resync_seconds": 30,
            "verify": {"enabled": False},
            "pull": {"max_bytes_per_second": rate},
            "models": [],
        }
        self.want_nothing()
        self.agent = StandaloneAgent(self.path, stdout_events=False)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def want_nothing(self) -> None:
        self._write()

    def want(self, active: str, prefetch: tuple[str, ...] = (), pins: tuple[str, ...] = ()) -> None:
        model = {
            "name": f"{NAMESPACE}/{NAME}",
            "source": self.url,
            "version": active,
            "prefetch": list(prefetch),
            "pin": list(pins),
            "retain": self.retain,
        }
        self.config["models"] = [model]
        self._write()

    def _write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.config))

    def states(self) -> dict[str, str]:
        config = load_config(self.path)
        if not config.models:
            return {}
        report = self.agent.reconciler.report(desired(config.models[0]))
        return {v.version: v.state for v in report.versions}

    def close(self) -> None:
        self.agent.stop.set()
        self.thread.join(timeout=30)
        self.agent.reconciler.wait_idle(120)  # nothing of this test left running after it


class KubeNode:
    """`modelcache agent --node NODE` following its NodeCache, in a thread of this process."""

    def __init__(
        self,
        work: Path,
        url: str,
        *,
        retain: int,
        rate: float | None,
        kubeconfig: Path,
        custom: client.CustomObjectsApi,
    ) -> None:
        self.root = work / "cache"
        self.url, self.retain, self.custom = url, retain, custom
        self.node = f"gpu-{uuid.uuid4().hex[:6]}"
        custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "nodecaches",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "NodeCache",
                "metadata": {"name": self.node},
                "spec": {"models": []},
            },
        )
        self.api = KubeClient.from_environment(kubeconfig)
        events = EventLog(work / "events.jsonl", node=self.node)
        engine = CacheEngine(Store(self.root), events, options=PullOptions(bandwidth_limit=rate))
        self.agent = KubeAgent(self.api, self.node, engine, status_interval=0.1)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def want(self, active: str, prefetch: tuple[str, ...] = (), pins: tuple[str, ...] = ()) -> None:
        entry = NodeModel(
            namespace=NAMESPACE,
            name=NAME,
            source=self.url,
            versions=list(dict.fromkeys([active, *prefetch])),
            active=active,
            retain=self.retain,
            pins=list(pins),
        )
        self.custom.patch_cluster_custom_object(
            GROUP, VERSION, "nodecaches", self.node, {"spec": {"models": [entry.to_wire()]}}
        )

    def states(self) -> dict[str, str]:
        body = self.custom.get_cluster_custom_object(GROUP, VERSION, "nodecaches", self.node)
        models = (body.get("status") or {}).get("models") or []
        return {v["version"]: v["state"] for m in models for v in m.get("versions", [])}

    def close(self) -> None:
        self.agent.request_stop()
        self.thread.join(timeout=30)
        self.agent.reconciler.wait_idle(120)
        self.api.close()
        self.custom.delete_cluster_custom_object(GROUP, VERSION, "nodecaches", self.node)


@pytest.fixture
def store(toolchain: Toolchain, tmp_path: Path) -> Iterator[ObjectStore]:
    """A store of the test's own, so that it can be stopped and started again."""
    with ObjectStore(weed=toolchain.weed, work_dir=tmp_path / "s3") as server:
        yield server


@pytest.fixture(params=["standalone", "kubernetes"])
def make_node(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kube: KubeControlPlane,
    crds: client.CustomObjectsApi,
    store: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Node]]:
    monkeypatch.setenv("OSS_ENDPOINT", store.endpoint)
    made: list[Node] = []

    def make(url: str, *, retain: int = 5, rate: float | None = None) -> Node:
        work = tmp_path / "node"
        node: Node
        if request.param == "standalone":
            node = StandaloneNode(work, url, retain=retain, rate=rate)
        else:
            node = KubeNode(
                work, url, retain=retain, rate=rate, kubeconfig=kube.kubeconfig, custom=crds
            )
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def publish_versions(
    store: ObjectStore, work: Path, sizes: dict[str, int], versions: list[str]
) -> tuple[str, dict[str, Path]]:
    """Versions with one file of their own each and SHARED in common."""
    bucket = f"r-{uuid.uuid4().hex[:8]}"
    store.create_bucket(bucket)
    url = f"oss://{bucket}/{NAME}"
    source = open_source(url)
    shared = os.urandom(4096)
    made = {}
    for index, version in enumerate(versions):
        directory = make_model(work / "published" / version, seed=index, sizes=sizes)
        (directory / SHARED).parent.mkdir(parents=True, exist_ok=True)
        (directory / SHARED).write_bytes(shared)
        publish(source, directory, version)
        made[version] = directory
    return url, made


def live(node: Node) -> str | None:
    current = node.root / "models" / NAMESPACE / NAME / "current"
    return current.resolve().name if current.is_symlink() else None


def entries(directory: Path) -> list[str]:
    """What a directory holds; a version leaves in two steps (renamed aside, then removed)."""
    return sorted(p.name for p in directory.iterdir())


def blob(node: Node, path: Path) -> Path:
    """Where the node's store keeps the blob of a published file's bytes."""
    return Layout(node.root).blob_path(hashlib.sha256(path.read_bytes()).hexdigest())


def test_a_pull_that_failed_while_the_store_was_down_succeeds_once_it_is_back(
    store: ObjectStore, make_node: Callable[..., Node], tmp_path: Path
) -> None:
    url, _ = publish_versions(store, tmp_path, {"lora/w.safetensors": 256 * 1024}, ["v1"])
    store.stop()
    node = make_node(url)
    node.want("v1")
    wait_for(lambda: node.states().get("v1") == "Failed", "v1 reported Failed", 120)
    assert live(node) is None
    store.start()
    wait_for(lambda: live(node) == "v1", "v1 live once the store is back, no restart", 120)
    wait_for(lambda: node.states().get("v1") == "Cached", "v1 reported Cached")


def test_a_rollback_does_not_wait_for_a_prefetch_in_flight(
    store: ObjectStore, make_node: Callable[..., Node], tmp_path: Path
) -> None:
    sizes = {"lora/w.safetensors": 64 * 1024}
    url, _ = publish_versions(store, tmp_path, sizes, ["v1", "v2"])
    # v3: large, in the same source, pulled at 512 KiB/s (32 s): still in flight below.
    source = open_source(url)
    directory = make_model(tmp_path / "published" / "v3", seed=9, sizes={"w.bin": 16 * 1024**2})
    publish(source, directory, "v3")
    node = make_node(url, rate=512 * 1024)
    node.want("v1", prefetch=("v2",))
    wait_for(lambda: live(node) == "v1" and node.states().get("v2") == "Cached", "v1, v2")
    node.want("v2", prefetch=("v3",))
    wait_for(lambda: live(node) == "v2", "v2 live")
    wait_for(lambda: node.states().get("v3") == "Pulling", "v3 pulling")
    node.want("v1", prefetch=("v3",))  # the rollback, while v3 downloads
    wait_for(lambda: live(node) == "v1", "v1 live again")
    assert node.states().get("v3") == "Pulling", "the rollback waited for the prefetch"


def test_retention_removes_the_blobs_only_dropped_versions_used(
    store: ObjectStore, make_node: Callable[..., Node], tmp_path: Path
) -> None:
    url, made = publish_versions(
        store, tmp_path, {"lora/w.safetensors": 128 * 1024}, ["v1", "v2", "v3"]
    )
    node = make_node(url, retain=1)
    own = blob(node, made["v1"] / "lora/w.safetensors")
    for version in ("v1", "v2", "v3"):
        node.want(version)
        wait_for(lambda v=version: live(node) == v, f"{version} live")  # type: ignore[misc]
        if version == "v1":
            assert own.is_file(), "v1's own blob, held while v1 is"
    versions = node.root / "models" / NAMESPACE / NAME / "versions"
    # v3 live and v2 its rollback target stay; v1 goes, and with it its own blob.
    wait_for(lambda: entries(versions) == ["v2", "v3"], "v1 dropped by retention")
    wait_for(lambda: not own.exists(), "the blob only v1 used collected")
    assert blob(node, made["v1"] / SHARED).exists(), "a blob v2 and v3 still use"
    report = CacheEngine(Store(node.root), EventLog()).verify(repair=False)
    assert report.checked == 4
    assert report.corrupt == []


def test_a_pinned_version_survives_retention_until_it_is_unpinned(
    store: ObjectStore, make_node: Callable[..., Node], tmp_path: Path
) -> None:
    url, _ = publish_versions(
        store, tmp_path, {"lora/w.safetensors": 64 * 1024}, ["v1", "v2", "v3", "v4"]
    )
    node = make_node(url, retain=1)
    node.want("v1", pins=("v1",))
    wait_for(lambda: live(node) == "v1", "v1 live")
    for version in ("v2", "v3", "v4"):
        node.want(version, pins=("v1",))
        wait_for(lambda v=version: live(node) == v, f"{version} live")  # type: ignore[misc]
    versions = node.root / "models" / NAMESPACE / NAME / "versions"
    wait_for(lambda: entries(versions) == ["v1", "v3", "v4"], "v2 dropped by retention")

    node.want("v4")  # the pin is taken off (spec.pin emptied, or the config's pins)
    wait_for(lambda: entries(versions) == ["v3", "v4"], "v1 unpinned, then dropped")
