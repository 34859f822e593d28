"""`modelcache agent`: the node daemon, from a YAML file (standalone) or its NodeCache."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from modelcache.api import DEFAULT_ROOT
from modelcache.cli.options import (
    CacheRoot,
    Concurrency,
    MaxRate,
    PartSize,
    parse_size,
    pull_options,
)


def agent(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Standalone mode: the node's desired state (YAML)."),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option("--node", envvar="NODE_NAME", help="Kubernetes mode: follow NodeCache NODE."),
    ] = None,
    cache: CacheRoot = DEFAULT_ROOT,
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
    peer_token_file: Annotated[
        Path | None,
        typer.Option(
            "--peer-token-file",
            help="Kubernetes mode: fan-out on (docs/fanout.md); peers present this token.",
        ),
    ] = None,
    peer_address: Annotated[
        str | None,
        typer.Option(
            "--peer-address",
            envvar="POD_IP",
            help="Kubernetes mode: this agent's address for peers.",
        ),
    ] = None,
    peer_port: Annotated[int, typer.Option("--peer-port", help="Kubernetes mode.")] = 9471,
    site_label: Annotated[
        str, typer.Option("--site-label", help="Kubernetes mode: the node label naming its site.")
    ] = "topology.kubernetes.io/zone",
    origin_streams: Annotated[
        int, typer.Option("--origin-streams", min=1, help="Kubernetes mode: L3 reads at once.")
    ] = 4,
) -> None:
    """Hold the models this node must hold: pull, verify, flip, call reloads, export metrics.

    The pull options apply in Kubernetes mode; the standalone config file has its own."""
    if (config is None) == (node is None):
        raise typer.BadParameter("give exactly one of --config (standalone) or --node (Kubernetes)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The agent's modules load only here: they need the [agent] extra, other commands do not.
    if config is not None:
        from modelcache.agent import run_standalone  # noqa: PLC0415

        if not run_standalone(config, once=once):  # what failed is on the lines above:
            raise typer.Exit(1)  # cron and init containers see 1
        return
    assert node is not None
    options = pull_options(concurrency, part_size, max_rate)
    verify_budget = parse_size(verify_rate, "--verify-rate")
    from modelcache.agent import PeerSettings, Verification, run_kubernetes  # noqa: PLC0415

    peers = None
    if peer_token_file is not None:
        if not peer_address:
            raise typer.BadParameter("--peer-token-file needs --peer-address (or POD_IP)")
        peers = PeerSettings(
            token_file=peer_token_file,
            address=peer_address,
            port=peer_port,
            site_label=site_label,
            origin_streams=origin_streams,
        )
    run_kubernetes(
        node,
        cache,
        kubeconfig=kubeconfig,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        status_interval=status_interval,
        options=options,
        verify=Verification(verify_budget, verify_interval) if verify_budget > 0 else None,
        peers=peers,
    )


def register(app: typer.Typer) -> None:
    app.command()(agent)
