"""`modelcache dev`: the real test services (kube-apiserver + etcd, SeaweedFS) for a person."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelcache.api.layout import DEFAULT_ROOT
from modelcache.cli.progress import step_reporter

app = typer.Typer(help="Run the test services locally: kube-apiserver + etcd and an S3 store.")


class HarnessMissingError(RuntimeError):
    """`modelcache dev` was run from an install without the test harness (a wheel, an image)."""


@app.callback()
def _needs_the_harness() -> None:
    """The wheel and the images leave the test harness out (pyproject.toml's wheel target,
    .dockerignore); say so in one line instead of a bare import error."""
    try:
        import modelcache.testing  # noqa: F401, PLC0415
    except ModuleNotFoundError as error:
        if error.name != "modelcache.testing":
            raise
        raise HarnessMissingError(
            "`modelcache dev` needs a source checkout (pip install -e '.[dev]'): this "
            "install (a wheel or an image) has no test harness (modelcache.testing)"
        ) from None


StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where state and logs live (default: <cache>/dev)."),
]


Cluster = Annotated[
    bool,
    typer.Option(
        "--cluster",
        help="A real cluster: kubelet nodes with containerd, CNI, kube-proxy and CoreDNS "
        "(root; Debian packages are installed if missing).",
    ),
]


@app.command()
def build(cluster: Cluster = False) -> None:
    """Build (or reuse) the pinned kube-apiserver, kubectl, etcd, helm, promtool, kstatus and
    Argo CD health-check binaries; with --cluster also kubelet & co, CoreDNS and the images."""
    from modelcache.testing.gitops import ensure_kstatus, ensure_luahealth  # noqa: PLC0415
    from modelcache.testing.promtool import ensure_promtool  # noqa: PLC0415
    from modelcache.testing.toolchain import ensure_toolchain  # noqa: PLC0415 - dev-only deps

    with step_reporter("preparing the test toolchain") as report:
        paths = ensure_toolchain(report).as_dict()
        paths["promtool"] = str(ensure_promtool(report))
        paths["kstatus"] = str(ensure_kstatus(report))
        paths["luahealth"] = str(ensure_luahealth(report))
    if cluster:
        from modelcache.testing.hostprep import (  # noqa: PLC0415
            cluster_unavailable,
            ensure_host_packages,
        )
        from modelcache.testing.images import ensure_images  # noqa: PLC0415
        from modelcache.testing.toolchain import ensure_node_toolchain  # noqa: PLC0415

        reason = cluster_unavailable()
        if reason is not None:
            Console().print(f"[yellow]no real cluster here: {reason}[/]")
        else:
            with step_reporter("preparing the cluster's binaries and images") as report:
                ensure_host_packages(report)
                nodes = ensure_node_toolchain(report)
                paths.update(nodes.as_dict())
                paths.update({i.ref: str(i.tarball) for i in ensure_images(nodes, report)})
    table = Table("binary or image", "path", box=None)
    for name, path in paths.items():
        table.add_row(name, path)
    Console().print(table)


@app.command()
def up(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
    cluster: Cluster = False,
    nodes: Annotated[
        int, typer.Option("--nodes", min=1, max=8, help="Kubelet nodes (with --cluster).")
    ] = 2,
) -> None:
    """Start the services in the background and print how to reach them."""
    from modelcache.testing import devenv  # noqa: PLC0415
    from modelcache.testing.toolchain import ensure_toolchain  # noqa: PLC0415

    with step_reporter("starting the modelcache dev environment") as report:
        ensure_toolchain(report)
        if cluster:
            _prepare_cluster(report)
        state, started = devenv.up(state_dir, cluster_nodes=nodes if cluster else None)
    if as_json:
        print(json.dumps(asdict(state), indent=2))
        return
    console = Console(soft_wrap=True)
    console.print("[green]started[/]" if started else "[yellow]already running[/]")
    console.print(f"  export KUBECONFIG={state.kubeconfig}")
    console.print(f"  kube-apiserver  {state.apiserver}")
    console.print(f"  kubectl         {state.kubectl}")
    console.print(f"  helm            {state.helm}")
    console.print(f"  S3 endpoint     {state.s3_endpoint}  (AWS_ENDPOINT_URL; any key pair)")
    console.print(f"  OSS endpoint    {state.s3_endpoint}  (OSS_ENDPOINT; anonymous, path-style)")
    console.print(f"  bucket          {state.bucket}")
    for name, hostpath in (state.nodes or {}).items():
        console.print(f"  {name:15} {DEFAULT_ROOT} is {hostpath}")
    console.print(f"  log             {state.log}")
    console.print("stop with: modelcache dev down")


def _prepare_cluster(report: Callable[[str], None]) -> None:
    """Build what a cluster needs in the foreground, where a person sees the progress."""
    from modelcache.testing.hostprep import (  # noqa: PLC0415
        ClusterUnavailable,
        cluster_unavailable,
        ensure_host_packages,
    )
    from modelcache.testing.images import ensure_images  # noqa: PLC0415
    from modelcache.testing.toolchain import ensure_node_toolchain  # noqa: PLC0415

    reason = cluster_unavailable()
    if reason is not None:
        raise ClusterUnavailable(reason)
    ensure_host_packages(report)
    ensure_images(ensure_node_toolchain(report), report)


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop the services started by `modelcache dev up`."""
    from modelcache.testing import devenv  # noqa: PLC0415

    stopped = devenv.down_all(state_dir)
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
