"""`modelcache dev`: the real test services (kube-apiserver + etcd, SeaweedFS) for a person."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelcache.cli.progress import step_reporter

app = typer.Typer(help="Run the test services locally: kube-apiserver + etcd and an S3 store.")

StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where state and logs live (default: <cache>/dev)."),
]


@app.command()
def build() -> None:
    """Build (or reuse) the pinned kube-apiserver, kubectl, etcd and helm binaries."""
    from modelcache.testing.toolchain import ensure_toolchain  # noqa: PLC0415 - dev-only deps

    with step_reporter("preparing the test toolchain") as report:
        toolchain = ensure_toolchain(report)
    table = Table("binary", "path", box=None)
    for name, path in toolchain.as_dict().items():
        table.add_row(name, path)
    Console().print(table)


@app.command()
def up(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
) -> None:
    """Start the services in the background and print how to reach them."""
    from modelcache.testing import devenv  # noqa: PLC0415
    from modelcache.testing.toolchain import ensure_toolchain  # noqa: PLC0415

    with step_reporter("starting the modelcache dev environment") as report:
        ensure_toolchain(report)
        state, started = devenv.up(state_dir)
    if as_json:
        print(json.dumps(asdict(state), indent=2))
        return
    console = Console()
    console.print("[green]started[/]" if started else "[yellow]already running[/]")
    console.print(f"  export KUBECONFIG={state.kubeconfig}")
    console.print(f"  kube-apiserver  {state.apiserver}")
    console.print(f"  kubectl         {state.kubectl}")
    console.print(f"  helm            {state.helm}")
    console.print(f"  S3 endpoint     {state.s3_endpoint}  (AWS_ENDPOINT_URL; any key pair)")
    console.print(f"  OSS endpoint    {state.s3_endpoint}  (OSS_ENDPOINT; anonymous, path-style)")
    console.print(f"  bucket          {state.bucket}")
    console.print(f"  log             {state.log}")
    console.print("stop with: modelcache dev down")


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop the services started by `modelcache dev up`."""
    from modelcache.testing import devenv  # noqa: PLC0415

    stopped = devenv.down(state_dir)
    Console().print("stopped" if stopped else "nothing was running")


@app.command()
def status(state_dir: StateDir = None) -> None:
    """Say whether the dev environment runs, and print its state as JSON."""
    from modelcache.testing import devenv  # noqa: PLC0415

    state = devenv.read_state(state_dir or devenv.default_state_dir())
    if state is None:
        Console().print("not running")
        raise typer.Exit(code=3)
    print(json.dumps(asdict(state), indent=2))
