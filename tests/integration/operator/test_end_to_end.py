"""The whole loop on real parts: operator + one agent process per node + SeaweedFS + pods' reload.

No kubelet runs, so each "pod" is a Pod object bound to its node with a loopback
IP written into its status, and a small HTTP server on that IP plays the
inference service's reload endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from urllib3.exceptions import ProtocolError

from modelcache.agent.events import read_events
from modelcache.api.k8s import API_VERSION, GROUP, VERSION
from modelcache.testing import KubeControlPlane, ObjectStore, Toolchain
from modelcache.testing.fleet import bind_pod, modelcache_process, node_agent
from modelcache.testing.ports import free_port
from modelcache.testing.process import ManagedProcess
from tests.integration.cli.support import make_model

BUCKET = "e2e-models"
NODES = 3


class PodServer(ThreadingHTTPServer):
    """One inference pod's reload endpoint; `refuse` makes it answer like a failing swap."""

    versions: list[str]
    refuse: str | None


class _Reload(BaseHTTPRequestHandler):
    server: PodServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.refuse == body["version"]:
            code, answer = 409, {"ok": False, "reason": "LoRA rank 16 does not fit slot rank 8"}
        else:
            self.server.versions.append(body["version"])
            code, answer = 200, {"ok": True, "live_version": body["version"]}
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def eventually(
    condition: Callable[[], bool], what: str, processes: list[ManagedProcess], timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            reason = process.exit_reason()
            assert reason is None, reason
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in processes)
            raise AssertionError(f"timed out: {what}\n{tails}")
        time.sleep(0.2)


class NodeCacheRecorder:
    """Watches the fleet's NodeCaches and keeps every state the fleet went through."""

    def __init__(self, api: client.CustomObjectsApi, nodes: list[str], namespace: str, name: str):
        self.nodes, self.key = nodes, (namespace, name)
        self.current: dict[str, dict[str, Any]] = {}
        self.states: list[dict[str, dict[str, Any]]] = []
        self._watch = watch.Watch()
        self._stopped = False
        listed = api.list_cluster_custom_object(GROUP, VERSION, "nodecaches")
        for item in listed["items"]:
            self._record(item)
        self._thread = threading.Thread(
            target=self._run, args=(api, listed["metadata"]["resourceVersion"]), daemon=True
        )
        self._thread.start()

    def _run(self, api: client.CustomObjectsApi, resource_version: str) -> None:
        # The API server ends a watch after its timeout: re-open it where it ended, so a
        # rollout slower than one watch is still recorded to its last state.
        while not self._stopped:
            stream = self._watch.stream(
                api.list_cluster_custom_object,
                GROUP,
                VERSION,
                "nodecaches",
                resource_version=resource_version,
                timeout_seconds=120,
            )
            try:
                for event in stream:
                    self._record(event["object"])
                    resource_version = event["object"]["metadata"]["resourceVersion"]
            except (OSError, ProtocolError):
                if not self._stopped:
                    raise  # only a stream we closed ourselves may end this way

    def _record(self, body: dict[str, Any]) -> None:
        node = body["metadata"]["name"]
        if node not in self.nodes:
            return
        spec = next(
            (
                m
                for m in (body.get("spec") or {}).get("models", [])
                if (m["namespace"], m["name"]) == self.key
            ),
            {},
        )
        status = next(
            (
                m
                for m in ((body.get("status") or {}).get("models") or [])
                if (m["namespace"], m["name"]) == self.key
            ),
            {},
        )
        self.current[node] = {
            "active": spec.get("active"),
            "reloaded": status.get("reloadedVersion"),
        }
        self.states.append(dict(self.current))

    def in_flight(self, state: dict[str, dict[str, Any]], version: str) -> int:
        """Nodes told to serve `version` whose pods have not all acknowledged it yet."""
        return sum(1 for m in state.values() if m["active"] == version and m["reloaded"] != version)

    def stop(self) -> list[dict[str, dict[str, Any]]]:
        self._stopped = True
        self._watch.stop()
        return list(self.states)


@pytest.fixture
def cluster(
    kube: KubeControlPlane,
    kube_client: Any,
    crds: client.CustomObjectsApi,
    object_store: ObjectStore,
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    object_store.create_bucket(BUCKET)
    core = client.CoreV1Api(kube_client)
    run = uuid.uuid4().hex[:6]
    namespace = f"studio-{run}"
    core.create_namespace({"metadata": {"name": namespace}})
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "OSS_ENDPOINT": object_store.endpoint,
        "PYTHONUNBUFFERED": "1",
    }
    processes: list[ManagedProcess] = []
    pods: dict[str, PodServer] = {}
    port = free_port()
    nodes = [f"gpu-{run}-{i}" for i in range(NODES)]
    try:
        for index, node in enumerate(nodes):
            core.create_node({"metadata": {"name": node, "labels": {"pool": run}}})
            ip = f"127.0.{int(run[:2], 16) % 200 + 10}.{index + 2}"
            server = PodServer((ip, port), _Reload)
            server.versions, server.refuse = [], None
            threading.Thread(target=server.serve_forever, daemon=True).start()
            pods[node] = server
            bind_pod(core, namespace, f"studio-{index}", node=node, ip=ip, labels={"app": "studio"})
            processes.append(
                node_agent(
                    node,
                    tmp_path / node,
                    log_path=tmp_path / f"agent-{node}.log",
                    env=env,
                    kubeconfig=kube.kubeconfig,
                ).start()
            )
        processes.append(
            modelcache_process(
                "operator",
                ["operator", "--kubeconfig", str(kube.kubeconfig), "--peering", f"test-{run}"],
                log_path=tmp_path / "operator.log",
                env=env,
                stop_grace=15,
            ).start()
        )
        yield {
            "namespace": namespace,
            "nodes": nodes,
            "pods": pods,
            "processes": processes,
            "run": run,
            "root": tmp_path,
            "env": env,
            "port": port,
        }
    finally:
        codes = {process.name: process.stop() for process in reversed(processes)}
        for server in pods.values():
            server.shutdown()
            server.server_close()
        for node in nodes:
            core.delete_node(node)
        core.delete_namespace(namespace)
    agents = {name: code for name, code in codes.items() if name.startswith("agent")}
    assert set(agents.values()) == {0}, f"agents must exit cleanly on SIGTERM: {agents}"


def test_apply_roll_out_fail_back_and_roll_back_without_download(
    cluster: dict[str, Any],
    crds: client.CustomObjectsApi,
    tmp_path: Path,
    kube: KubeControlPlane,
    toolchain: Toolchain,
) -> None:
    url = f"oss://{BUCKET}/lora-{cluster['run']}"
    files = {"lora/20.safetensors": 300_000, "vae/config.json": 700}
    for seed, version in enumerate(["v1", "v2", "v3"]):
        directory = make_model(tmp_path / version, seed=seed, sizes=files)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "modelcache",
                "publish",
                str(directory),
                url,
                "--version",
                version,
            ],
            env=cluster["env"],
            check=True,
            capture_output=True,
        )
    namespace, name, processes = cluster["namespace"], "lora", cluster["processes"]
    crds.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modelversions",
        {
            "apiVersion": API_VERSION,
            "kind": "ModelVersion",
            "metadata": {"name": name},
            "spec": {
                "source": {"url": url},
                "version": "v1",
                "nodeSelector": {"matchLabels": {"pool": cluster["run"]}},
                "rollout": {"canary": 1, "maxUnavailable": 1},
                "reload": {
                    "podSelector": {"matchLabels": {"app": "studio"}},
                    "port": cluster["port"],
                },
            },
        },
    )

    def status() -> dict[str, Any]:
        return (
            crds.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", name).get(
                "status"
            )
            or {}
        )

    def live(version: str) -> bool:
        current = status()
        return current.get("phase") == "Available" and current.get("currentVersion") == version

    eventually(lambda: live("v1"), "v1 available on every node", processes)
    assert status()["ready"] == f"{NODES}/{NODES}"
    for node in cluster["nodes"]:
        current = cluster["root"] / node / "models" / namespace / name / "current"
        assert current.resolve().name == "v1"
        assert cluster["pods"][node].versions == ["v1"]
    kubectl = subprocess.run(
        [str(toolchain.kubectl), "get", "mv", "-n", namespace, "--no-headers"],
        env=cluster["env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert kubectl[:4] == [name, "v1", f"{NODES}/{NODES}", "Available"]

    # v2 rolls out canary first, one node at a time: checked on every recorded NodeCache state.
    recorder = NodeCacheRecorder(crds, cluster["nodes"], namespace, name)
    crds.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions", name, {"spec": {"version": "v2"}}
    )
    eventually(lambda: live("v2"), "v2 available", processes)
    states = recorder.stop()
    assert len(states) > NODES, "the watch recorded the rollout"
    in_flight = [recorder.in_flight(state, "v2") for state in states]
    assert max(in_flight) == 1, f"maxUnavailable is 1: nodes between flip and reload {in_flight}"
    first = next(state for state in states if any(m["active"] == "v2" for m in state.values()))
    assert [n for n, m in first.items() if m["active"] == "v2"] == [cluster["nodes"][0]]
    order = sorted(
        cluster["nodes"],
        key=lambda n: next(
            e["ts"]
            for e in read_events(cluster["root"] / n / "events.jsonl")
            if e["event"] == "L2_FLIP" and e["version"] == "v2"
        ),
    )
    assert order[0] == cluster["nodes"][0], "the canary (first node by name) flips first"

    # v3 is refused by the second node's pod: the rollout stops and flips back to v2.
    cluster["pods"][cluster["nodes"][1]].refuse = "v3"
    crds.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions", name, {"spec": {"version": "v3"}}
    )
    eventually(lambda: status().get("phase") == "Degraded", "v3 rollout stopped", processes)
    eventually(
        lambda: all(
            (cluster["root"] / n / "models" / namespace / name / "current").resolve().name == "v2"
            for n in cluster["nodes"]
        ),
        "every node back on v2",
        processes,
    )
    core = client.CoreV1Api(client.ApiClient(crds.api_client.configuration))

    def rollout_failed() -> list[Any]:
        events = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [e for e in events if e.reason == "RolloutFailed"]

    # The event is posted right after the status and NodeCache writes the agents act on.
    eventually(lambda: bool(rollout_failed()), "a RolloutFailed event", processes)
    failed = rollout_failed()
    assert cluster["nodes"][1] in failed[0].message
    assert "rank 16" in failed[0].message

    # Roll back to v1 (cached everywhere): a flip on every node, nothing downloaded.
    fetched_before = {
        n: len(
            [
                e
                for e in read_events(cluster["root"] / n / "events.jsonl")
                if e["event"] == "L3_FETCH"
            ]
        )
        for n in cluster["nodes"]
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "modelcache",
            "rollback",
            name,
            "-n",
            namespace,
            "--kubeconfig",
            str(kube.kubeconfig),
        ],
        env=cluster["env"],
        check=True,
        capture_output=True,
    )
    assert (
        crds.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", name)["spec"][
            "version"
        ]
        == "v2"
    )
    eventually(lambda: live("v2"), "back on v2 after the CLI rollback", processes)

    # v1 is still cached on every node (retain keeps it): going back downloads nothing.
    crds.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions", name, {"spec": {"version": "v1"}}
    )
    eventually(lambda: live("v1"), "rolled back to v1", processes)
    for node in cluster["nodes"]:
        events = read_events(cluster["root"] / node / "events.jsonl")
        assert len([e for e in events if e["event"] == "L3_FETCH"]) == fetched_before[node]
        assert (
            cluster["root"] / node / "models" / namespace / name / "current"
        ).resolve().name == "v1"
        assert cluster["pods"][node].versions[-1] == "v1"

    # Deleting the ModelVersion removes its entry from every NodeCache; agents then delete files.
    crds.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", name)
    eventually(
        lambda: (
            not any(
                (cluster["root"] / n / "models" / namespace / name).exists()
                for n in cluster["nodes"]
            )
        ),
        "every node removed the deleted model's files",
        processes,
    )
