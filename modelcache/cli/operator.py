"""`modelcache operator`: run the kopf operator (Deployment; several replicas elect one leader)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer


def operator(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig", envvar="KUBECONFIG", help="Default: in-cluster, else ~/.kube/config."
        ),
    ] = None,
    priority: Annotated[
        int, typer.Option("--priority", help="Peering priority (highest leads).")
    ] = 0,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="No leader election: only ever run one replica.")
    ] = False,
    liveness: Annotated[
        str | None, typer.Option("--liveness", help="e.g. http://0.0.0.0:8080/healthz")
    ] = None,
) -> None:
    """Reconcile ModelVersions into NodeCaches and roll versions out in waves."""
    from modelcache.operator.run import run_operator  # noqa: PLC0415 - needs [operator]

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_operator(
        kubeconfig=kubeconfig,
        peering=None if standalone else "modelcache",
        priority=priority,
        liveness=liveness,
    )


def register(app: typer.Typer) -> None:
    app.command()(operator)
