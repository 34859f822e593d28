"""`modelcache agent`: the node daemon, from a YAML file (standalone) or its NodeCache."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from modelcache.sources.download import PullOptions

from modelcache.cli.options import (
    CacheRoot,
    Concurrency,
    MaxRate,
    PartSize,
    parse_size,
    pull_options,
)


def _stop_on_signals(stop: Callable[[], None]) -> None:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def agent(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Standalone mode: the node's desired state (YAML)."),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option("--node", envvar="NODE_NAME", help="Kubernetes mode: follow NodeCache NODE."),
    ] = None,
    cache: CacheRoot = Path("/var/lib/modelcache"),
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", envvar="KUBECONFIG", help="Default: in-cluster.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Kubernetes mode: Prometheus port.")
    ] = 9400,
    metrics_host: Annotated[str, typer.Option("--metrics-host")] = "0.0.0.0",  # noqa: S104
    status_interval: Annotated[
        float, typer.Option("--status-interval", help="Least seconds between status patches.")
    ] = 0.5,
    once: Annotated[
        bool, typer.Option("--once", help="Standalone: reconcile once and exit (cron, first sync).")
    ] = False,
    concurrency: Concurrency = 16,
    part_size: PartSize = "8M",
    max_rate: MaxRate = None,
    verify_rate: Annotated[
        str,
        typer.Option(
            "--verify-rate",
            help="Kubernetes mode: I/O budget of the continuous re-verification (0 turns it off).",
        ),
    ] = "64M",
    verify_interval: Annotated[
        float, typer.Option("--verify-interval", help="Kubernetes mode: seconds per full pass.")
    ] = 24 * 3600,
) -> None:
    """Hold the models this node must hold: pull, verify, flip, call reloads, export metrics.

    The pull options apply in Kubernetes mode; the standalone config file has its own."""
    if (config is None) == (node is None):
        raise typer.BadParameter("give exactly one of --config (standalone) or --node (Kubernetes)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if config is not None:
        _standalone(config, once=once)
        return
    assert node is not None
    engine_options = pull_options(concurrency, part_size, max_rate)
    verify_budget = parse_size(verify_rate, "--verify-rate")
    _kubernetes(
        node,
        cache,
        kubeconfig,
        metrics_port,
        metrics_host,
        status_interval,
        engine_options,
        (verify_budget, verify_interval),
    )


def _standalone(config: Path, *, once: bool) -> None:
    from modelcache.agent.standalone import StandaloneAgent  # noqa: PLC0415 - needs [agent]

    daemon = StandaloneAgent(config)
    if once:
        try:
            done = daemon.run_once()
        finally:
            daemon.events.close()
        if not done:  # what failed is on the lines above; cron and init containers see 1
            raise typer.Exit(1)
        return
    _stop_on_signals(daemon.stop.set)
    daemon.run()


def _kubernetes(
    node: str,
    cache: Path,
    kubeconfig: Path | None,
    metrics_port: int | None,
    metrics_host: str,
    status_interval: float,
    options: PullOptions,
    verify: tuple[int, float],
) -> None:
    from prometheus_client import start_http_server  # noqa: PLC0415

    from modelcache.agent.engine import CacheEngine  # noqa: PLC0415
    from modelcache.agent.events import EventLog  # noqa: PLC0415
    from modelcache.agent.kubeagent import KubeAgent  # noqa: PLC0415
    from modelcache.agent.kubeapi import KubeClient  # noqa: PLC0415
    from modelcache.agent.metrics import AgentMetrics  # noqa: PLC0415
    from modelcache.agent.scrubber import Scrubber  # noqa: PLC0415
    from modelcache.store import Store  # noqa: PLC0415

    # In-cluster when no kubeconfig is given and KUBERNETES_SERVICE_HOST is set. Not the
    # `kubernetes` package: ~27 MB more RSS per agent (kubeapi.py).
    api = KubeClient.from_environment(kubeconfig)
    metrics = AgentMetrics()
    events = EventLog(cache / "events.jsonl", stdout=True, node=node)
    events.subscribe(metrics.observe)
    engine = CacheEngine(Store(cache), events, options=options)
    daemon = KubeAgent(api, node, engine, status_interval=status_interval)
    server = None
    if metrics_port is not None:
        server, _ = start_http_server(metrics_port, metrics_host, registry=metrics.registry)
    scrubber = None
    verify_budget, verify_interval = verify
    if verify_budget > 0:
        scrubber = Scrubber(
            engine,
            bytes_per_second=verify_budget,
            pass_interval=verify_interval,
            repair=True,
            stop=daemon.stop,
        )
        scrubber.start()
    _stop_on_signals(daemon.request_stop)
    try:
        daemon.run()
    finally:
        if scrubber is not None:
            scrubber.join(timeout=30)
        if server is not None:
            server.shutdown()
        events.close()
        api.close()


def register(app: typer.Typer) -> None:
    app.command()(agent)
