"""Options shared by the cache commands: cache root, L3 credentials, pull tuning."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelcache.api import DEFAULT_ROOT, ROOT_ENV, SecretInURL, check_url
from modelcache.sources import Credentials

if TYPE_CHECKING:
    from modelcache.sources import PullOptions

CacheRoot = Annotated[
    Path,
    typer.Option(
        "--cache",
        envvar=ROOT_ENV,
        help=f"Node cache root (L2). Default ${ROOT_ENV}, else {DEFAULT_ROOT}.",
    ),
]
HighWatermark = Annotated[
    float,
    typer.Option(
        "--high-watermark",
        envvar="MODELCACHE_HIGH_WATERMARK",
        min=0.01,
        max=1.0,
        help="Refuse a pull that would fill the cache's disk beyond this fraction.",
    ),
]


def _checked_endpoint(value: str | None) -> str | None:
    """--endpoint refused at once, redacted, when it carries credentials or a query."""
    if not value:
        return value
    try:
        return check_url(value, "")  # click names the option: "Invalid value for '--endpoint'"
    except SecretInURL as error:
        raise typer.BadParameter(str(error)) from None


Endpoint = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="OSS/S3 endpoint URL (default: OSS_ENDPOINT / AWS_ENDPOINT_URL); "
        "no user:password@ or query: keys go in the access-key options.",
        callback=_checked_endpoint,
    ),
]
AccessKeyId = Annotated[str | None, typer.Option("--access-key-id", help="Access key id.")]
AccessKeySecret = Annotated[
    str | None,
    typer.Option("--access-key-secret", help="Access key secret (prefer the environment)."),
]
SessionToken = Annotated[str | None, typer.Option("--session-token", help="STS session token.")]
Concurrency = Annotated[
    int, typer.Option("--concurrency", min=1, max=256, help="Parallel ranged GETs per file.")
]
PartSize = Annotated[
    str,
    typer.Option("--part-size", help="Bytes per ranged GET, e.g. 8M (pieced files: a piece)."),
]
MaxRate = Annotated[
    str | None,
    typer.Option("--max-rate", help="Bandwidth cap in bytes/s, e.g. 10M; none by default."),
]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str, what: str) -> int:
    """`8M`, `512K`, `1.5G`, `1048576` -> bytes (binary units)."""
    match = _SIZE.match(text)
    if match is None:
        raise typer.BadParameter(f"{what}: {text!r} is not a size like 8M, 512K or 1G")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def credentials(
    endpoint: str | None, key_id: str | None, secret: str | None, token: str | None
) -> Credentials | None:
    if not any((endpoint, key_id, secret, token)):
        return None
    return Credentials(
        endpoint=endpoint, access_key_id=key_id, access_key_secret=secret, session_token=token
    )


def pull_options(concurrency: int, part_size: str, max_rate: str | None) -> PullOptions:
    from modelcache.sources import PullOptions  # noqa: PLC0415 - loads the downloader

    defaults = PullOptions()
    return PullOptions(
        concurrency=concurrency,
        part_size=parse_size(part_size, "--part-size"),
        retries=defaults.retries,
        bandwidth_limit=float(parse_size(max_rate, "--max-rate")) if max_rate else None,
    )
