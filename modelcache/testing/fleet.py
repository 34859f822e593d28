"""A fleet without kubelets: `modelcache` processes, node agents, and Pods bound to nodes.

The end-to-end tests, the demo and the benchmarks all run one agent process per
Node object and stand in for inference pods with a Pod bound to the node whose
status carries a loopback IP a local server answers on. One definition of each,
so they cannot drift apart.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from kubernetes import client

from modelcache.testing.ports import free_port
from modelcache.testing.process import ManagedProcess


def modelcache_process(
    name: str,
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    stop_grace: float = 10,
) -> ManagedProcess:
    """`python -m modelcache ARGS` as a ManagedProcess (not started)."""
    return ManagedProcess(
        name,
        [sys.executable, "-m", "modelcache", *args],
        log_path=log_path,
        env=dict(env),
        stop_grace=stop_grace,
    )


def node_agent(
    node: str,
    cache: Path,
    *,
    log_path: Path,
    env: Mapping[str, str],
    kubeconfig: Path | None = None,
    metrics_port: int | None = None,
    status_interval: float = 0.2,
    extra: Sequence[str] = (),
) -> ManagedProcess:
    """`modelcache agent --node NODE` on loopback (not started); metrics on a free port
    unless one is given."""
    args = ["agent", "--node", node, "--cache", str(cache)]
    if kubeconfig is not None:
        args += ["--kubeconfig", str(kubeconfig)]
    port = free_port() if metrics_port is None else metrics_port
    args += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    args += ["--status-interval", str(status_interval), *extra]
    return modelcache_process(f"agent {node}", args, log_path=log_path, env=env)


def bind_pod(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    *,
    node: str,
    ip: str,
    labels: Mapping[str, str],
) -> None:
    """A Running Pod on `node` at `ip`, as a kubelet would report it (no container runs)."""
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=dict(labels)),
            spec=client.V1PodSpec(
                node_name=node, containers=[client.V1Container(name="app", image="inference")]
            ),
        ),
    )
    core.patch_namespaced_pod_status(
        name, namespace, {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    )
