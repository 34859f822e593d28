"""`modelcache status NAME -n NS [--watch]`: a ModelVersion's rollout, node by node.

Reading is `rolloutkube`, the view `rolloutview`, the text `rollouttext`; this module only
wires them to the terminal (a live table) or to plain lines (a pipe, a log, a test).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live

from modelcache.cli.rollouttext import outcome_line, plain_lines, renderable
from modelcache.cli.rolloutview import RolloutView, build_view, carry_sources

if TYPE_CHECKING:
    from modelcache.cli.rolloutkube import Snapshot


class WatchTimeout(TimeoutError):  # noqa: N818 - reads as what it is
    """--timeout passed before the rollout settled."""


def status(
    name: Annotated[str, typer.Argument(help="The ModelVersion's name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Its namespace.")] = "default",
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Follow the rollout until it settles: exit 0 when Available, 1 when "
            "Degraded or rolled back.",
        ),
    ] = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", envvar="KUBECONFIG", help="Default: ~/.kube/config."),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between reads with --watch.")
    ] = 1.0,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="With --watch: give up (exit 1) after this long."),
    ] = None,
) -> None:
    """Show a ModelVersion's rollout: phase, waves, each node's version and pull progress,
    the share of bytes from L3, the last errors."""
    try:
        from kubernetes import config as kube_config  # noqa: PLC0415
    except ImportError as error:
        raise typer.BadParameter(
            "status needs the Kubernetes client: pip install 'modelcache[operator]'"
        ) from error
    from modelcache.cli.rolloutkube import RolloutReader, follow  # noqa: PLC0415

    console = Console(highlight=False, soft_wrap=True)
    api = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig) if kubeconfig else None
    )
    with api:
        reader = RolloutReader(api, namespace, name)
        if not watch:
            _show(console, _view(reader.read()))
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        snapshots = follow(reader.read, interval=interval, deadline=deadline)
        views = _views(snapshots)
        try:
            view = _live(console, views) if console.is_terminal else _lines(views)
        except TimeoutError:
            raise WatchTimeout(
                f"ModelVersion {namespace}/{name} did not settle within {timeout:g}s"
            ) from None
    print(outcome_line(view), flush=True)
    if view.outcome != "Available":
        raise typer.Exit(1)


def _view(snapshot: Snapshot) -> RolloutView:
    return build_view(snapshot.model_version, snapshot.node_caches)


def _views(snapshots: Iterable[Snapshot]) -> Iterator[RolloutView]:
    """Each snapshot's view, keeping where finished pulls got their bytes from."""
    view: RolloutView | None = None
    for snapshot in snapshots:
        view = carry_sources(view, _view(snapshot))
        yield view


def _show(console: Console, view: RolloutView) -> None:
    if console.is_terminal:
        console.print(renderable(view))
    else:
        print("\n".join(plain_lines(view)), flush=True)


def _live(console: Console, views: Iterable[RolloutView]) -> RolloutView:
    """A table redrawn in place until the rollout settles; the last view stays on screen."""
    view: RolloutView | None = None
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        for view in views:
            live.update(renderable(view))
            if view.outcome is not None:
                break
    assert view is not None
    return view


def _lines(views: Iterable[RolloutView]) -> RolloutView:
    """Each change as a block of lines, headed by the seconds since the start."""
    started = time.monotonic()
    printed: list[str] = []
    view: RolloutView | None = None
    for view in views:
        lines = plain_lines(view)
        if lines != printed:
            printed = lines
            lines = [f"[{time.monotonic() - started:4.0f}s] {lines[0]}", *lines[1:]]
            print("\n".join(lines), flush=True)
        if view.outcome is not None:
            break
    assert view is not None
    return view


def register(app: typer.Typer) -> None:
    app.command()(status)
