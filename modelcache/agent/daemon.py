"""One agent process for both modes: `modelcache agent` parses its options and calls
`run_standalone` (the desired state from node.yaml) or `run_kubernetes` (from the node's
NodeCache). Each builds its mode's agent, runs it inside an `AgentProcess` (the event log,
the metrics server, the scrubber, the order they stop in) and stops it on SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from modelcache.agent.engine import CacheEngine
from modelcache.agent.kube import KubeClient
from modelcache.agent.kubeagent import KubeAgent
from modelcache.agent.kubepeers import DEFAULT_SITE_LABEL, SitePeers, node_site
from modelcache.agent.peering import Peering
from modelcache.agent.process import AgentProcess, Verification
from modelcache.agent.standalone import StandaloneAgent
from modelcache.api import PeerStatus, event_log_path
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


@dataclass(frozen=True)
class PeerSettings:
    """Fan-out in Kubernetes mode (docs/fanout.md): the token file the chart mounts, the
    address and port this agent serves its site's peers on, the node label naming sites."""

    token_file: Path
    address: str
    port: int = 9471
    site_label: str = DEFAULT_SITE_LABEL
    origin_streams: int = 4

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


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
    peers: PeerSettings | None = None,
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
    store = Store(root)
    peering, fleet, peer = None, None, None
    if peers is not None:
        peering = Peering(
            node,
            peers.token_file,
            lambda: store,
            process.metrics.registry,
            port=peers.port,
            origin_streams=peers.origin_streams,
        )
        site = node_site(api, node, peers.site_label)
        fleet = peering.fleet(SitePeers(api, node, site).members)
        peer = PeerStatus(url=peers.url, site=site)
    engine = CacheEngine(store, process.events, options=options, fleet=fleet)
    agent = KubeAgent(
        api, node, engine, status_interval=status_interval, metrics=process.metrics, peer=peer
    )
    stop_on_signals(agent.request_stop)
    try:
        if peering is not None:
            peering.start()
        process.run(agent.run, stop=agent.stop, engine=lambda: agent.engine)
    finally:
        if peering is not None:
            peering.stop()
        api.close()
