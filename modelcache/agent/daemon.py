"""One agent process for both modes: `modelcache agent` parses its options and calls
`run_standalone` (the desired state from node.yaml) or `run_kubernetes` (from the node's
NodeCache). Each builds its mode's agent, runs it inside an `AgentProcess` (the event log,
the metrics server, the scrubber, the order they stop in) and stops it on SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from modelcache.agent.engine import CacheEngine
from modelcache.agent.kube import KubeClient
from modelcache.agent.kubeagent import KubeAgent
from modelcache.agent.process import AgentProcess, Verification
from modelcache.agent.standalone import StandaloneAgent
from modelcache.api import event_log_path
from modelcache.sources import PullOptions
from modelcache.store import Store


def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM (the kubelet, systemd) and SIGINT stop the agent at once, not at its next poll."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def run_standalone(config: Path, *, once: bool = False) -> bool:
    """The agent of node.yaml at `config`, until a signal stops it. `once`: reconcile, wait for
    the pulls, return whether every model is live and acknowledged (cron, a first sync)."""
    agent = StandaloneAgent(config)
    if once:
        try:
            return agent.run_once()
        finally:
            agent.events.close()
    stop_on_signals(agent.request_stop)
    agent.run()
    return True


def run_kubernetes(
    node: str,
    root: Path,
    *,
    kubeconfig: Path | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",  # noqa: S104 - scraped by Prometheus from outside the node
    status_interval: float = 0.5,
    options: PullOptions | None = None,
    verify: Verification | None = None,
) -> None:
    """The agent of NodeCache `node`, its cache at `root`, until a signal stops it."""
    # In-cluster when no kubeconfig is given and KUBERNETES_SERVICE_HOST is set. Not the
    # `kubernetes` package: ~27 MB more RSS per agent (modelcache/agent/kube).
    api = KubeClient.from_environment(kubeconfig)
    process = AgentProcess(
        event_log_path(root),
        node=node,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        verify=verify,
    )
    engine = CacheEngine(Store(root), process.events, options=options)
    agent = KubeAgent(api, node, engine, status_interval=status_interval, metrics=process.metrics)
    stop_on_signals(agent.request_stop)
    try:
        process.run(agent.run, stop=agent.stop, engine=lambda: agent.engine)
    finally:
        api.close()
