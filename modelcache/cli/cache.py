"""Cache commands for a person on one machine: publish to L3, pull into L2, flip, inspect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelcache.api import DEFAULT_ROOT, check_version, event_log_path, parse_model_ref
from modelcache.cli.options import (
    AccessKeyId,
    AccessKeySecret,
    CacheRoot,
    Concurrency,
    Endpoint,
    HighWatermark,
    MaxRate,
    PartSize,
    SessionToken,
    credentials,
    pull_options,
)
from modelcache.cli.progress import TransferProgress, human_bytes

if TYPE_CHECKING:  # the engine, the store and the L3 clients load only when a command runs
    from modelcache.agent.engine import CacheEngine
    from modelcache.sources import ObjectClient
    from modelcache.store import ModelRef

DEFAULT_CONCURRENCY = 16
DEFAULT_PART_SIZE = "8M"
DEFAULT_HIGH_WATERMARK = 0.95
console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

Url = Annotated[str, typer.Argument(help="oss://bucket/prefix, s3://bucket/prefix or a directory.")]
ModelName = Annotated[str, typer.Argument(help="NAME (namespace default) or NAMESPACE/NAME.")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _model(name: str) -> ModelRef:
    from modelcache.store import ModelRef  # noqa: PLC0415

    namespace, model = parse_model_ref(name)
    return ModelRef(namespace, model)


def _client(
    url: str, endpoint: str | None, key_id: str | None, secret: str | None, token: str | None
) -> ObjectClient:
    from modelcache.sources import open_source  # noqa: PLC0415

    return open_source(url, credentials(endpoint, key_id, secret, token))


def _engine(
    root: Path,
    *,
    endpoint: str | None = None,
    key_id: str | None = None,
    secret: str | None = None,
    token: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    part_size: str = DEFAULT_PART_SIZE,
    max_rate: str | None = None,
    high_watermark: float = DEFAULT_HIGH_WATERMARK,
) -> CacheEngine:
    from modelcache.agent.engine import CacheEngine  # noqa: PLC0415
    from modelcache.agent.events import EventLog  # noqa: PLC0415
    from modelcache.store import Store  # noqa: PLC0415

    store = Store(root, high_watermark=high_watermark)
    events = EventLog(event_log_path(root))
    return CacheEngine(
        store,
        events,
        options=pull_options(concurrency, part_size, max_rate),
        credentials=credentials(endpoint, key_id, secret, token),
    )


def publish(
    directory: Annotated[Path, typer.Argument(help="Directory whose files form the version.")],
    url: Url,
    version: Annotated[str, typer.Option("--version", "-v", help="The new version's name.")],
    endpoint: Endpoint = None,
    access_key_id: AccessKeyId = None,
    access_key_secret: AccessKeySecret = None,
    session_token: SessionToken = None,
) -> None:
    """Upload DIRECTORY to URL/VERSION/, then its manifest, then the index."""
    from modelcache import sources  # noqa: PLC0415

    client = _client(url, endpoint, access_key_id, access_key_secret, session_token)
    total = sum(p.stat().st_size for _, p in sources.scan_directory(directory))
    progress = TransferProgress("publishing")
    progress.start(
        str(client.url), check_version(version), total, len(sources.scan_directory(directory))
    )
    try:
        manifest = sources.publish(client, directory, version, progress=progress.advance)
    finally:
        progress.finish()
    console.print(
        f"published {client.describe(version)}: {len(manifest.files)} files, "
        f"{human_bytes(manifest.total_size)}"
    )


def versions(
    url: Url,
    as_json: AsJson = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Write index.json again from the manifests the store lists (after it was "
            "deleted or damaged by hand).",
        ),
    ] = False,
    named: Annotated[
        list[str] | None,
        typer.Option(
            "--version",
            help="With --rebuild, on a store that cannot list: a version whose manifest to "
            "add (repeatable).",
        ),
    ] = None,
    endpoint: Endpoint = None,
    access_key_id: AccessKeyId = None,
    access_key_secret: AccessKeySecret = None,
    session_token: SessionToken = None,
) -> None:
    """List the versions published at URL, oldest first (and any still being published)."""
    from modelcache.sources import list_versions, rebuild_index  # noqa: PLC0415

    client = _client(url, endpoint, access_key_id, access_key_secret, session_token)
    if named and not rebuild:
        raise typer.BadParameter("--version names versions to rebuild from: add --rebuild")
    if rebuild:
        rebuilt = rebuild_index(client, named or ())
        index = rebuilt.index
        for version, reason in rebuilt.skipped:
            err_console.print(f"[yellow]skipped {version}[/]: {escape(reason)}")
    else:
        index = list_versions(client)
    if as_json:
        print(index.model_dump_json(by_alias=True, indent=2))
        return
    table = Table("VERSION", "STATE", "CREATED", "FILES", "SIZE", box=None)
    for entry in index.versions:
        published = entry.state == "published"
        table.add_row(
            entry.version,
            entry.state,
            entry.created.isoformat(timespec="seconds"),
            str(entry.files) if published else "-",
            human_bytes(entry.size) if published else "-",
        )
    console.print(table)


def prune(
    url: Url,
    keep: Annotated[int, typer.Option("--keep", min=1, help="How many newest versions to keep.")],
    protect: Annotated[
        list[str] | None, typer.Option("--protect", help="A version never to delete (repeatable).")
    ] = None,
    endpoint: Endpoint = None,
    access_key_id: AccessKeyId = None,
    access_key_secret: AccessKeySecret = None,
    session_token: SessionToken = None,
) -> None:
    """Delete the oldest versions at URL beyond --keep, except --protect ones."""
    from modelcache import sources  # noqa: PLC0415

    client = _client(url, endpoint, access_key_id, access_key_secret, session_token)
    removed = sources.prune(client, keep, set(protect or []))
    console.print(f"deleted {', '.join(removed)}" if removed else "nothing to delete")


def pull(
    url: Url,
    name: Annotated[str, typer.Option("--name", help="NAME or NAMESPACE/NAME.")],
    version: Annotated[str, typer.Option("--version", "-v", help="Version to pull.")],
    cache: CacheRoot = DEFAULT_ROOT,
    concurrency: Concurrency = DEFAULT_CONCURRENCY,
    part_size: PartSize = DEFAULT_PART_SIZE,
    max_rate: MaxRate = None,
    high_watermark: HighWatermark = DEFAULT_HIGH_WATERMARK,
    endpoint: Endpoint = None,
    access_key_id: AccessKeyId = None,
    access_key_secret: AccessKeySecret = None,
    session_token: SessionToken = None,
) -> None:
    """Download and verify VERSION from URL into the node cache (does not flip)."""
    engine = _engine(
        cache,
        endpoint=endpoint,
        key_id=access_key_id,
        secret=access_key_secret,
        token=session_token,
        concurrency=concurrency,
        part_size=part_size,
        max_rate=max_rate,
        high_watermark=high_watermark,
    )
    result = engine.pull(_model(name), url, check_version(version), progress=TransferProgress())
    if result.already_installed:
        console.print(f"{result.model} {version}: already cached, nothing downloaded")
    else:
        console.print(
            f"{result.model} {version}: {result.files_downloaded}/{result.files} files downloaded, "
            f"{human_bytes(result.bytes_downloaded)} in {result.seconds:.1f}s"
        )


def use(
    name: ModelName,
    version: Annotated[str, typer.Argument(help="Version to make live.")],
    source: Annotated[
        str | None, typer.Option("--source", help="L3 URL, if the node has not pulled from it yet.")
    ] = None,
    cache: CacheRoot = DEFAULT_ROOT,
    concurrency: Concurrency = DEFAULT_CONCURRENCY,
    part_size: PartSize = DEFAULT_PART_SIZE,
    max_rate: MaxRate = None,
    high_watermark: HighWatermark = DEFAULT_HIGH_WATERMARK,
) -> None:
    """Make VERSION live: pull it if needed, then flip `current` atomically."""
    engine = _engine(
        cache,
        concurrency=concurrency,
        part_size=part_size,
        max_rate=max_rate,
        high_watermark=high_watermark,
    )
    model = _model(name)
    _, old = engine.use(model, check_version(version), source, progress=TransferProgress())
    console.print(f"{model}: {old or '(none)'} -> {version}  ({engine.store.current_path(model)})")


def rollback(
    name: ModelName,
    cache: CacheRoot = DEFAULT_ROOT,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", help="Roll back the ModelVersion NAME in this cluster namespace."
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", envvar="KUBECONFIG", help="With -n.")
    ] = None,
) -> None:
    """Go back to the previous version: with -n, of a ModelVersion in the cluster (the operator
    flips every node, no download); without, of this machine's cache."""
    if namespace is not None:
        try:
            from kubernetes import config as kube_config  # noqa: PLC0415
        except ImportError as error:
            raise typer.BadParameter(
                "rollback -n needs the Kubernetes client: pip install 'modelcache[operator]'"
            ) from error

        from modelcache.operator import rollback_model_version  # noqa: PLC0415

        api = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
        with api:
            old, new = rollback_model_version(api, namespace, name)
        console.print(f"ModelVersion {namespace}/{name}: spec.version {old} -> {new}")
        return
    engine = _engine(cache)
    model = _model(name)
    new, previous = engine.rollback(model)
    console.print(f"{model}: {previous} -> {new}")


def ls(cache: CacheRoot = DEFAULT_ROOT, as_json: AsJson = False) -> None:
    """List cached models and versions; `*` marks the live one, `<` the rollback target."""
    from modelcache.store import Store  # noqa: PLC0415

    store = Store(cache)
    rows: list[dict[str, Any]] = []
    for model in store.models():
        current, previous, pins = store.current(model), store.previous(model), store.pins(model)
        for installed in store.versions(model):
            rows.append(
                {
                    "model": str(model),
                    "version": installed.version,
                    "live": installed.version == current,
                    "previous": installed.version == previous,
                    "pinned": installed.version in pins,
                    "files": installed.files,
                    "bytes": installed.size,
                    "installed": installed.installed_at.isoformat(timespec="seconds"),
                }
            )
    if as_json:
        print(json.dumps({"root": str(cache), "versions": rows}, indent=2))
        return
    table = Table("MODEL", "VERSION", "", "FILES", "SIZE", "INSTALLED", box=None)
    for row in rows:
        marks = (
            ("*" if row["live"] else "")
            + ("<" if row["previous"] else "")
            + ("p" if row["pinned"] else "")
        )
        table.add_row(
            row["model"],
            row["version"],
            marks,
            str(row["files"]),
            human_bytes(row["bytes"]),
            row["installed"],
        )
    console.print(table)
    usage = store.usage()
    blobs, free = human_bytes(usage.blob_bytes), human_bytes(usage.free_bytes)
    console.print(f"{store.root}: blobs {blobs}, disk free {free}")


def gc(
    cache: CacheRoot = DEFAULT_ROOT,
    keep: Annotated[
        int | None, typer.Option("--keep", min=1, help="Also keep at most N versions per model.")
    ] = None,
) -> None:
    """Remove versions beyond --keep (never live, rollback target or pinned) and unused blobs."""
    engine = _engine(cache)
    if keep is not None:
        for model in engine.store.models():
            removed = engine.retain(model, keep)
            if removed:
                console.print(f"{model}: removed {', '.join(removed)}")
    console.print(f"freed {human_bytes(engine.gc())}")


def verify(
    name: Annotated[str | None, typer.Argument(help="Only this model (default: all).")] = None,
    cache: CacheRoot = DEFAULT_ROOT,
    repair: Annotated[bool, typer.Option(help="Re-download corrupt files from L3.")] = True,
) -> None:
    """Re-hash cached files; repair corrupt ones from L3 when the source is known."""
    engine = _engine(cache)
    report = engine.verify([_model(name)] if name else None, repair=repair)
    console.print(
        f"checked {report.checked} files ({human_bytes(report.bytes)}): "
        f"{len(report.corrupt)} corrupt, {len(report.repaired)} repaired"
    )
    if report.unrepaired:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    for command in (publish, versions, prune, pull, use, rollback, ls, gc, verify):
        app.command()(command)
