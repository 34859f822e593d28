"""L3 sources: oss://, s3://, file://, http(s)://; publishing versions; the ranged parallel
download with resume and verification.

What it offers (`__all__`): `open_source` (a URL to an `ObjectClient`), the clients'
contract and errors (`base`); publishing and reading versions (`publish`, `read_manifest`,
`list_versions`, `prune`...); the downloader (`download_file`, `PullOptions`,
`RateLimiter`) and its seam for where each piece comes from (`Piece`, `PieceSource`,
`PieceRead`, `PieceRouter`, `ObjectPieces`). Behind it: one module per backend (oss, s3,
local, http, imported only for a URL of their scheme), `download` (the transfer),
`pieces` (a download's pieces and their sources), `resume` (the resume record),
`ratelimit` (the bandwidth cap). Checksums and durable writes come from `modelcache.fs`.

The downloader's names load on first use: they need the `[agent]` extra (tenacity),
which a CLI that only publishes or lists versions does without.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcache.sources.base import (
    DOCUMENT_LIMIT,
    Credentials,
    InvalidSourceURL,
    ObjectChanged,
    ObjectClient,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    Progress,
    SourceError,
    SourceReadOnly,
    SourceUnreachable,
    SourceURL,
    parse_source_url,
)
from modelcache.sources.fanout import (
    BlobRoute,
    FanoutOptions,
    FanoutRouter,
    Fleet,
    PeerReport,
    PieceTally,
)
from modelcache.sources.pieces import (
    ObjectPieces,
    Piece,
    PieceRead,
    PieceRouter,
    PieceSource,
    from_l3,
)
from modelcache.sources.publish import (
    Rebuilt,
    VersionExists,
    VersionMissing,
    list_versions,
    prune,
    publish,
    read_manifest,
    rebuild_index,
    scan_directory,
)
from modelcache.sources.ratelimit import RateLimiter
from modelcache.sources.registry import open_source

if TYPE_CHECKING:
    from modelcache.sources.download import (
        DiscardHook,
        PullCancelled,
        PullOptions,
        VerificationError,
        discard,
        download_file,
    )

_DOWNLOADER = frozenset(
    {"DiscardHook", "PullCancelled", "PullOptions", "VerificationError", "discard", "download_file"}
)

__all__ = [
    "DOCUMENT_LIMIT",
    "BlobRoute",
    "Credentials",
    "DiscardHook",
    "FanoutOptions",
    "FanoutRouter",
    "Fleet",
    "InvalidSourceURL",
    "ObjectChanged",
    "ObjectClient",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectPieces",
    "ObjectTooLarge",
    "PeerReport",
    "Piece",
    "PieceRead",
    "PieceRouter",
    "PieceSource",
    "PieceTally",
    "Progress",
    "PullCancelled",
    "PullOptions",
    "RateLimiter",
    "Rebuilt",
    "SourceError",
    "SourceReadOnly",
    "SourceURL",
    "SourceUnreachable",
    "VerificationError",
    "VersionExists",
    "VersionMissing",
    "discard",
    "download_file",
    "from_l3",
    "list_versions",
    "open_source",
    "parse_source_url",
    "prune",
    "publish",
    "read_manifest",
    "rebuild_index",
    "scan_directory",
]


def __getattr__(name: str) -> object:
    """The downloader's names, imported when first asked for (see the module's docstring)."""
    if name in _DOWNLOADER:
        from modelcache.sources import download  # noqa: PLC0415 - needs the [agent] extra

        return getattr(download, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
