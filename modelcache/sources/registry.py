"""Which backend serves a URL. Backends are imported on first use: an agent pulling from
OSS never pays for importing boto3, and the other way round."""

from __future__ import annotations

from modelcache.sources.base import (
    Credentials,
    InvalidSourceURL,
    ObjectClient,
    SourceURL,
    parse_source_url,
)


def open_source(url: str | SourceURL, credentials: Credentials | None = None) -> ObjectClient:
    """An `ObjectClient` for `oss://`, `s3://`, `file://` (or a plain path) and `http(s)://`.

    `credentials` (from flags) override the environment; file and http sources ignore them.
    """
    parsed = url if isinstance(url, SourceURL) else parse_source_url(url)
    if parsed.scheme == "oss":
        from modelcache.sources.oss import OssClient  # noqa: PLC0415 - imported on demand

        return OssClient(parsed, credentials)
    if parsed.scheme == "s3":
        from modelcache.sources.s3 import S3ObjectClient  # noqa: PLC0415

        return S3ObjectClient(parsed, credentials)
    if parsed.scheme == "file":
        from modelcache.sources.local import LocalClient  # noqa: PLC0415

        return LocalClient(parsed)
    if parsed.scheme in ("http", "https"):
        from modelcache.sources.http import HttpClient  # noqa: PLC0415

        return HttpClient(parsed)
    raise InvalidSourceURL(f"no backend for URL scheme {parsed.scheme!r} in {parsed}")
