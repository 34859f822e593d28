"""oss://bucket/prefix through oss2: Alibaba Cloud OSS, or any store speaking its dialect.

Credentials come from `Credentials` (flags) first, then OSS_ENDPOINT,
OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET, OSS_SESSION_TOKEN (STS); no key id
means anonymous access. Never lists a bucket: list calls fail against some
OSS-compatible stores, and agents read manifests instead. oss2's own CRC
(crcmod, slow in pure Python) is switched off: the downloader verifies with
fastcrc, and HEAD's x-oss-hash-crc64ecma is checked against the manifest.

Error mapping: 404 -> ObjectNotFound, 412 or another ETag -> ObjectChanged,
connection failures, 5xx and throttling -> SourceUnreachable (worth retrying).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from xml.etree import ElementTree

import oss2

from modelcache.api.urls import redact_url
from modelcache.fs import crc64_xz
from modelcache.problems import one_line
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

MiB = 1024 * 1024
POOL_SIZE = 64
"""HTTP connections per client: at least the downloader's concurrency."""
MULTIPART_THRESHOLD = 64 * MiB
PART_SIZE = 16 * MiB
UPLOAD_THREADS = 4
TIMEOUT = 30.0
"""Seconds oss2 waits to connect and between bytes of a response."""

T = TypeVar("T")

# oss2 logs request headers (the STS token among them) at DEBUG and every error at INFO.
if logging.getLogger("oss2").level == logging.NOTSET:
    logging.getLogger("oss2").setLevel(logging.WARNING)


def _endpoint_url(endpoint: str) -> str:
    """`oss-cn-hangzhou.aliyuncs.com` -> https://...; oss2 alone would pick plain http."""
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def _auth(credentials: Credentials | None) -> Any:
    """StsAuth with a session token, Auth with a key pair, AnonymousAuth without keys."""
    given = credentials or Credentials()
    key_id = given.access_key_id or env_first("OSS_ACCESS_KEY_ID")
    secret = given.access_key_secret or env_first("OSS_ACCESS_KEY_SECRET")
    token = given.session_token or env_first("OSS_SESSION_TOKEN")
    if not key_id:
        return oss2.AnonymousAuth()
    if not secret:
        raise SourceError("OSS_ACCESS_KEY_ID is set but OSS_ACCESS_KEY_SECRET is not")
    if token:
        return oss2.StsAuth(key_id, secret, token)
    return oss2.Auth(key_id, secret)


class OssClient(ObjectClient):
    """One oss://bucket/prefix. One oss2.Bucket (one pooled session) serves all threads."""

    def __init__(
        self,
        url: SourceURL,
        credentials: Credentials | None = None,
        *,
        pool_size: int = POOL_SIZE,
        timeout: float = TIMEOUT,
    ) -> None:
        super().__init__(url)
        if url.scheme != "oss" or not url.bucket:
            raise InvalidSourceURL(f"{url} is not an oss://bucket/prefix URL")
        endpoint = resolve_endpoint(credentials, "OSS_ENDPOINT")
        if not endpoint:
            raise SourceError(
                f"no OSS endpoint for {url}: set OSS_ENDPOINT (e.g. "
                "oss-cn-hangzhou.aliyuncs.com) or pass --endpoint"
            )
        self.endpoint = _endpoint_url(endpoint)
        oss2.defaults.connection_pool_size = max(oss2.defaults.connection_pool_size, pool_size)
        try:
            self._bucket = oss2.Bucket(
                _auth(credentials),
                self.endpoint,
                url.bucket,
                session=oss2.Session(pool_size=pool_size),
                connect_timeout=timeout,
                enable_crc=False,
            )
        except oss2.exceptions.ClientError as error:
            raise InvalidSourceURL(f"invalid OSS endpoint {self._where!r}: {error}") from None

    def __repr__(self) -> str:
        return f"OssClient({self.url.raw!r}, endpoint={self._where!r})"

    @property
    def _where(self) -> str:
        """The endpoint for messages: checked on the way in, redacted again on the way out."""
        return redact_url(self.endpoint)

    # -- reads ------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo:
        result = self._call(key, lambda: self._bucket.head_object(self.url.key(key)))
        crc = result.headers.get("x-oss-hash-crc64ecma")
        return ObjectInfo(
            key=key,
            size=int(result.content_length),
            etag=str(result.etag or ""),
            crc64=int(crc) if crc else None,
        )

    def iter_range(
        self, key: str, start: int, end: int, *, etag: str | None = None, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        if end <= start:
            return
        headers = {"x-oss-range-behavior": "standard"}
        if etag:
            headers["If-Match"] = f'"{etag}"'
        result = self._call(
            key,
            lambda: self._bucket.get_object(
                self.url.key(key), byte_range=(start, end - 1), headers=headers
            ),
        )
        try:
            if etag and result.etag and result.etag != etag:
                raise ObjectChanged(
                    f"{self.describe(key)} changed: ETag {result.etag}, expected {etag}"
                )
            if result.status != 206 and not (start == 0 and result.content_length == end):
                raise SourceError(f"{self._where} ignored the Range header for {key}")
            yield from self._stream(key, result, chunk)
        finally:
            result.resp.response.close()

    def _stream(self, key: str, result: Any, chunk: int) -> Iterator[bytes]:
        """The body as requests delivers it; any failure mid-body is worth a retry."""
        body = result.resp.response.iter_content(chunk)
        while True:
            try:
                data = next(body, b"")
            except Exception as error:  # requests/urllib3 raise many kinds mid-body
                raise SourceUnreachable(
                    f"{self.describe(key)}: connection to {self._where} broke: "
                    f"{type(error).__name__}"
                ) from None
            if not data:
                return
            yield data

    def get_bytes(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes:
        result = self._call(key, lambda: self._bucket.get_object(self.url.key(key)))
        try:  # content_length refuses before the body is read; the read stops at limit + 1
            chunks = self._stream(key, result, min(limit + 1, 1 << 20))
            return read_within(chunks, limit, self.describe(key), result.content_length)
        finally:
            result.resp.response.close()

    # -- writes -----------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        result = self._call(key, lambda: self._bucket.put_object(self.url.key(key), data))
        self._check_server_crc(key, result, crc64_xz(data))

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        # OSS's own header, and the S3 one for S3-compatible servers behind an oss:// URL.
        headers = {"x-oss-forbid-overwrite": "true", "If-None-Match": "*"}
        try:
            self._call(key, lambda: self._bucket.put_object(self.url.key(key), data, headers))
        except ObjectChanged:  # 412
            return False
        except SourceError as error:
            if "FileAlreadyExists" in str(error):  # 409 from OSS
                return False
            raise
        return True

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        size = path.stat().st_size
        if size < MULTIPART_THRESHOLD:
            self.put_bytes(key, path.read_bytes())
            if progress is not None:
                progress(size)
            return
        self._multipart(key, path, size, progress)

    def _multipart(self, key: str, path: Path, size: int, progress: Progress | None) -> None:
        """Init, upload parts in a few threads, complete; abort on any failure."""
        full = self.url.key(key)
        upload_id = self._call(key, lambda: self._init_multipart(full))
        fd = os.open(path, os.O_RDONLY)
        try:

            def upload(number: int) -> oss2.models.PartInfo:
                offset = (number - 1) * PART_SIZE
                data = os.pread(fd, min(PART_SIZE, size - offset), offset)
                result = self._call(
                    key, lambda: self._bucket.upload_part(full, upload_id, number, data)
                )
                if progress is not None:
                    progress(len(data))
                return oss2.models.PartInfo(number, result.etag, size=len(data))

            numbers = range(1, -(-size // PART_SIZE) + 1)
            with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="modelcache-put") as pool:
                parts = list(pool.map(upload, numbers))
            self._call(key, lambda: self._bucket.complete_multipart_upload(full, upload_id, parts))
        except BaseException:
            try:
                self._bucket.abort_multipart_upload(full, upload_id)
            except oss2.exceptions.OssError as error:
                logging.getLogger(__name__).warning("abort of upload %s failed: %s", key, error)
            raise
        finally:
            os.close(fd)

    def _init_multipart(self, full: str) -> str:
        """InitiateMultipartUpload, reading UploadId in any XML namespace: oss2's parser
        finds it only without one, and S3-compatible stores answer in S3's namespace."""
        response = self._bucket._do(  # the request oss2.Bucket.init_multipart_upload sends
            "POST",
            self._bucket.bucket_name,
            full,
            params={"uploads": ""},
            headers=oss2.utils.set_content_type(oss2.CaseInsensitiveDict(), full),
        )
        root = ElementTree.fromstring(response.read())  # noqa: S314 - our own endpoint's answer
        for element in root.iter():
            if element.tag.rsplit("}", 1)[-1] == "UploadId" and element.text:
                return element.text
        raise SourceError(f"{self._where} sent no UploadId for {full}")

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:  # one by one: batch delete is a list-style call some stores reject
            self._delete_one(key)

    def _delete_one(self, key: str) -> None:
        try:
            self._call(key, lambda: self._bucket.delete_object(self.url.key(key)))
        except ObjectNotFound:
            return

    # -- errors -----------------------------------------------------------------------------
    def _check_server_crc(self, key: str, result: Any, local: int) -> None:
        server = getattr(result, "crc", None)
        if server is not None and int(server) != local:
            raise SourceError(
                f"{self.describe(key)}: OSS stored CRC-64 {server}, but {local} was sent"
            )

    def list_keys(self) -> list[str]:
        base = self.url.key("")
        listing = oss2.ObjectIteratorV2(self._bucket, prefix=base)
        try:
            found = self._call("", lambda: [o.key for o in listing])
        except RuntimeError as error:  # oss2 could not parse the store's answer
            raise SourceError(
                f"{self.describe('')} cannot be listed through oss2 against this store "
                f"({one_line(error)}): name the versions instead"
            ) from None
        return [key[len(base) :] for key in found]

    def _call(self, key: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except oss2.exceptions.OssError as error:
            self._raise(key, error)

    def _raise(self, key: str, error: Any) -> NoReturn:
        where = self.describe(key)
        status = int(error.status)
        code = getattr(error, "code", "") or ""
        if isinstance(error, oss2.exceptions.RequestError):
            reason = type(getattr(error, "exception", error)).__name__
            raise SourceUnreachable(f"{self._where} unreachable ({reason}) for {where}") from None
        if status == 404:
            detail = f" ({code})" if code and code != "NoSuchKey" else ""
            raise ObjectNotFound(f"no object {where}{detail}") from None
        if status == 412:
            raise ObjectChanged(f"{where} changed since it was first read (412)") from None
        if status >= 500 or status == 429:
            raise SourceUnreachable(f"{self._where} answered {status} {code} for {where}") from None
        if status == 403:
            raise SourceError(f"access denied to {where} (403 {code}): check credentials") from None
        raise SourceError(f"{where}: OSS error {status} {code} {error.message}".rstrip()) from None
