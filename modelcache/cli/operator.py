"""`modelcache operator`: run the kopf operator (Deployment; several replicas elect one leader)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from modelcache.operator.tolerations import Toleration


def _tolerations(text: str | None) -> tuple[Toleration, ...] | None:
    """The option's JSON, checked before the operator starts (a bad one names its entry)."""
    from modelcache.operator.tolerations import parse_tolerations  # noqa: PLC0415 - CLI start

    if text is None:
        return None
    try:
        return parse_tolerations(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--agent-tolerations") from None


def _node_selector(text: str | None) -> dict[str, str] | None:
    """The option's JSON, checked before the operator starts."""
    from modelcache.operator.tolerations import parse_node_selector  # noqa: PLC0415 - CLI start

    if text is None:
        return None
    try:
        return parse_node_selector(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--agent-node-selector") from None


def operator(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig", envvar="KUBECONFIG", help="Default: in-cluster, else ~/.kube/config."
        ),
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option(
            "--priority",
            help="Peering priority; the highest live replica leads. Default: random, so "
            "replicas never tie (kopf pauses every replica of a tied priority).",
        ),
    ] = None,
    peering: Annotated[
        str, typer.Option("--peering", help="ClusterKopfPeering the replicas elect through.")
    ] = "modelcache",
    peering_lifetime: Annotated[
        int,
        typer.Option(
            "--peering-lifetime",
            min=2,
            help="Seconds a silent leader still counts as alive; a standby takes over after.",
        ),
    ] = 60,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="No leader election: only ever run one replica.")
    ] = False,
    liveness: Annotated[
        str | None, typer.Option("--liveness", help="e.g. http://0.0.0.0:8080/healthz")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus metrics on this port (the chart: 9470). Default: none.",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option("--metrics-host")] = "0.0.0.0",  # noqa: S104
    agent_tolerations: Annotated[
        str | None,
        typer.Option(
            "--agent-tolerations",
            metavar="JSON",
            help="The agent DaemonSet's tolerations, a JSON list as in a pod spec (the chart "
            "passes agent.tolerations): a Node whose NoSchedule/NoExecute taints they do not "
            "tolerate runs no agent and is left out of rollouts. At most 64 KiB. "
            "Default: no Node is left out.",
        ),
    ] = None,
    agent_node_selector: Annotated[
        str | None,
        typer.Option(
            "--agent-node-selector",
            metavar="JSON",
            help="The agent DaemonSet's nodeSelector, a JSON object of label to value (the "
            "chart passes agent.nodeSelector): a Node whose labels it does not match runs no "
            "agent and is left out of rollouts. Default: no Node is left out.",
        ),
    ] = None,
) -> None:
    """Reconcile ModelVersions into NodeCaches and roll versions out in waves."""
    tolerations = _tolerations(agent_tolerations)
    selector = _node_selector(agent_node_selector)
    from modelcache.operator.run import run_operator  # noqa: PLC0415 - needs [operator]

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_operator(
        kubeconfig=kubeconfig,
        peering=None if standalone else peering,
        priority=priority,
        peering_lifetime=peering_lifetime,
        liveness=liveness,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        agent_tolerations=tolerations,
        agent_node_selector=selector,
    )


def register(app: typer.Typer) -> None:
    app.command()(operator)
