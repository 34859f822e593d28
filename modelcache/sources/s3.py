"""s3://bucket/prefix through boto3: AWS S3 or any S3-compatible store (MinIO, SeaweedFS...).

Credentials: `Credentials` (flags) first, then boto3's default chain (env,
profile, instance role); with none at all, requests go unsigned (public
buckets). AWS_ENDPOINT_URL (or the endpoint flag) selects another store and
path-style addressing; the region defaults to us-east-1. Checksums beyond what
S3 requires are off, as several S3-compatible stores reject them.

Error mapping: 404 -> ObjectNotFound, 412 or another ETag -> ObjectChanged,
connection failures, 5xx and throttling -> SourceUnreachable (worth retrying).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config

from modelcache.api.urls import redact_url
from modelcache.sources.base import (
    DOCUMENT_LIMIT,
    Credentials,
    InvalidSourceURL,
    ObjectChanged,
    ObjectClient,
    ObjectInfo,
    ObjectNotFound,
    Progress,
    SourceError,
    SourceUnreachable,
    SourceURL,
    env_first,
    read_within,
    resolve_endpoint,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client as Boto3S3

MiB = 1024 * 1024
POOL_SIZE = 64
MULTIPART_THRESHOLD = 64 * MiB
PART_SIZE = 16 * MiB
UPLOAD_THREADS = 4
DEFAULT_REGION = "us-east-1"
DELETE_BATCH = 1000
T = TypeVar("T")

# botocore logs request headers (a session token among them) at DEBUG.
if logging.getLogger("botocore").level == logging.NOTSET:
    logging.getLogger("botocore").setLevel(logging.INFO)


def _client_kwargs(credentials: Credentials | None) -> dict[str, Any]:
    given = credentials or Credentials()
    kwargs: dict[str, Any] = {}
    if given.access_key_id:
        kwargs["aws_access_key_id"] = given.access_key_id
        kwargs["aws_secret_access_key"] = given.access_key_secret
        kwargs["aws_session_token"] = given.session_token
    return kwargs


class S3ObjectClient(ObjectClient):
    """One s3://bucket/prefix. boto3 clients are thread-safe: one serves all threads."""

    def __init__(
        self,
        url: SourceURL,
        credentials: Credentials | None = None,
        *,
        pool_size: int = POOL_SIZE,
        timeout: float = 30.0,
        attempts: int = 2,
    ) -> None:
        super().__init__(url)
        if url.scheme != "s3" or not url.bucket:
            raise InvalidSourceURL(f"{url} is not an s3://bucket/prefix URL")
        given = credentials or Credentials()
        endpoint = resolve_endpoint(credentials, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if endpoint and "://" not in endpoint:
            endpoint = f"https://{endpoint}"
        self.endpoint = endpoint
        region = given.region or env_first("AWS_REGION", "AWS_DEFAULT_REGION") or DEFAULT_REGION
        session = boto3.session.Session()
        kwargs = _client_kwargs(credentials)
        signed = bool(kwargs) or session.get_credentials() is not None
        config = Config(
            region_name=region,
            max_pool_connections=pool_size,
            connect_timeout=min(timeout, 10.0),
            read_timeout=timeout,
            retries={"total_max_attempts": attempts, "mode": "standard"},
            s3={"addressing_style": "path" if self.endpoint else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            **({} if signed else {"signature_version": UNSIGNED}),
        )
        try:
            self._s3: Boto3S3 = session.client(
                "s3", endpoint_url=self.endpoint, config=config, **kwargs
            )
        except ValueError as error:  # botocore rejects a malformed endpoint URL
            raise InvalidSourceURL(f"invalid S3 endpoint {self._where!r}: {error}") from None

    def __repr__(self) -> str:
        return f"S3ObjectClient({self.url.raw!r}, endpoint={self._where!r})"

    @property
    def _where(self) -> str:
        """The endpoint for messages: checked on the way in, redacted again on the way out."""
        return redact_url(self.endpoint) if self.endpoint else "the S3 endpoint"

    # -- reads ------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo:
        full = self.url.key(key)
        answer = self._call(key, lambda: self._s3.head_object(Bucket=self.url.bucket, Key=full))
        return ObjectInfo(key=key, size=answer["ContentLength"], etag=_etag(answer.get("ETag")))

    def iter_range(
        self, key: str, start: int, end: int, *, etag: str | None = None, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        if end <= start:
            return
        extra: dict[str, Any] = {"IfMatch": f'"{etag}"'} if etag else {}
        full = self.url.key(key)
        answer = self._call(
            key,
            lambda: self._s3.get_object(
                Bucket=self.url.bucket, Key=full, Range=f"bytes={start}-{end - 1}", **extra
            ),
        )
        body = answer["Body"]
        try:
            got = _etag(answer.get("ETag"))
            if etag and got and got != etag:
                raise ObjectChanged(f"{self.describe(key)} changed: ETag {got}, expected {etag}")
            if "ContentRange" not in answer and not (start == 0 and answer["ContentLength"] == end):
                raise SourceError(f"{self._where} ignored the Range header for {key}")
            yield from self._stream(key, body, chunk)
        finally:
            body.close()

    def _stream(self, key: str, body: Any, chunk: int) -> Iterator[bytes]:
        while True:
            try:
                data = body.read(chunk)
            except Exception as error:  # botocore/urllib3 raise many kinds mid-body
                raise SourceUnreachable(
                    f"{self.describe(key)}: connection to {self._where} broke: "
                    f"{type(error).__name__}"
                ) from None
            if not data:
                return
            yield bytes(data)

    def get_bytes(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes:
        full = self.url.key(key)
        answer = self._call(key, lambda: self._s3.get_object(Bucket=self.url.bucket, Key=full))
        body = answer["Body"]
        try:  # ContentLength refuses before the body is read; the read stops at limit + 1
            chunks = self._stream(key, body, min(limit + 1, 1 << 20))
            return read_within(chunks, limit, self.describe(key), answer.get("ContentLength"))
        finally:
            body.close()

    # -- writes -----------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        full = self.url.key(key)
        self._call(key, lambda: self._s3.put_object(Bucket=self.url.bucket, Key=full, Body=data))

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        full = self.url.key(key)
        try:
            self._call(
                key,
                lambda: self._s3.put_object(
                    Bucket=self.url.bucket, Key=full, Body=data, IfNoneMatch="*"
                ),
            )
        except ObjectChanged:  # 412: the key exists
            return False
        return True

    def expected_etag(self, path: Path) -> str | None:
        size = path.stat().st_size
        chunk = size if size < MULTIPART_THRESHOLD else PART_SIZE
        digests: list[bytes] = []
        with path.open("rb") as handle:
            while data := handle.read(max(chunk, 1)):
                digests.append(hashlib.md5(data, usedforsecurity=False).digest())
        if size < MULTIPART_THRESHOLD:
            return (
                digests[0].hex() if digests else hashlib.md5(b"", usedforsecurity=False).hexdigest()
            )
        whole = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        return f"{whole}-{len(digests)}"

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=PART_SIZE,
            max_concurrency=UPLOAD_THREADS,
        )
        full = self.url.key(key)
        self._call(
            key,
            lambda: self._s3.upload_file(
                str(path), self.url.bucket, full, Config=config, Callback=progress
            ),
        )

    def delete(self, keys: Sequence[str]) -> None:
        for first in range(0, len(keys), DELETE_BATCH):
            self._delete_batch(keys[first : first + DELETE_BATCH])

    def _delete_batch(self, batch: Sequence[str]) -> None:
        objects: Any = [{"Key": self.url.key(k)} for k in batch]
        answer = self._call(
            batch[0],
            lambda: self._s3.delete_objects(
                Bucket=self.url.bucket, Delete={"Objects": objects, "Quiet": True}
            ),
        )
        failed = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if failed:
            names = ", ".join(str(e.get("Key")) for e in failed[:5])
            raise SourceError(f"{self.url}: deleting {names} failed")

    def list_keys(self) -> list[str]:
        base = self.url.key("")
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.url.bucket, Prefix=base
        )
        found = self._call(
            "", lambda: [o["Key"] for page in pages for o in page.get("Contents", [])]
        )
        return [key[len(base) :] for key in found]

    # -- errors -----------------------------------------------------------------------------
    def _call(self, key: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except botocore.exceptions.ClientError as error:
            self._raise_client_error(key, error)
        except (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
        ) as error:
            raise SourceUnreachable(
                f"{self._where} unreachable ({type(error).__name__}) for {self.describe(key)}"
            ) from None
        except botocore.exceptions.NoCredentialsError:
            raise SourceError(f"no AWS credentials for {self.describe(key)}") from None
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error) as error:
            raise SourceError(f"{self.describe(key)}: {error}") from None

    def _raise_client_error(self, key: str, error: botocore.exceptions.ClientError) -> NoReturn:
        where = self.describe(key)
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "404"):
            detail = f" ({code})" if code == "NoSuchBucket" else ""
            raise ObjectNotFound(f"no object {where}{detail}") from None
        if status == 412 or code == "PreconditionFailed":
            raise ObjectChanged(f"{where} changed since it was first read (412)") from None
        if status >= 500 or status == 429 or code in ("SlowDown", "Throttling"):
            raise SourceUnreachable(f"{self._where} answered {status} {code} for {where}") from None
        if status == 403:
            raise SourceError(f"access denied to {where} (403 {code}): check credentials") from None
        raise SourceError(f"{where}: S3 error {status} {code}") from None


def _etag(value: str | None) -> str:
    return (value or "").strip('"')
