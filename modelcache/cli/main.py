"""Entry point of the `modelcache` command: sub-commands and one-line error handling."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from modelcache import __version__
from modelcache.cli import agent, cache, dev, operator, status
from modelcache.cli.errors import print_exception, report_error

app = typer.Typer(
    name="modelcache",
    help="Keep model files cached across GPU nodes: object storage -> node NVMe -> GPU memory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cache.register(app)
agent.register(app)
operator.register(app)
status.register(app)
app.add_typer(dev.app, name="dev")


def _print_version(value: bool) -> None:
    if value:
        print(f"modelcache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """modelcache: versioned, verified model caches managed from Kubernetes."""


def main() -> None:
    """Run the CLI; an error becomes one line on stderr and exit 1 (a traceback with --debug)."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        if "--debug" in sys.argv[1:]:
            print_exception()
        sys.exit(report_error(error))


if __name__ == "__main__":
    main()
