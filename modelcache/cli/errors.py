"""One-line errors for people: a message and a non-zero exit, the traceback only with --debug."""

from __future__ import annotations

from rich.console import Console

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def report_error(error: BaseException) -> int:
    """Print `error: <message>` on stderr (extra lines of detail below it); return the exit code."""
    message = str(error).strip() or type(error).__name__
    first, _, rest = message.partition("\n")
    _stderr.print(f"[bold red]error:[/] {first}", markup=True)
    if rest:
        _stderr.print(rest, markup=False)
    return 1


def print_exception() -> None:
    _stderr.print_exception()
