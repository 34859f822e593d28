"""Thread-safe JSON over HTTPS to one API server, on urllib3 (TLS, pooling, retries): the
agent's GETs, LISTs, WATCHes and merge patches."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import urllib3

from modelcache.agent.kube.config import (
    SERVICE_HOST_ENV,
    ClusterConfig,
    in_cluster_config,
    load_kubeconfig,
)
from modelcache.agent.kube.errors import ApiError
from modelcache.agent.kube.watch import WatchEvent, watch_events
from modelcache.fs import read_capped

TOKEN_REFRESH_SECONDS = 60.0
MAX_TOKEN_BYTES = 64 * 1024  # a projected service-account JWT is about 1 KiB
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "modelcache-agent"


class _Token:
    """A bearer token, from a file re-read once it is `TOKEN_REFRESH_SECONDS` old."""

    def __init__(
        self,
        token: str | None,
        token_file: Path | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = token
        self._file = token_file
        self._clock = clock
        self._value: str | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def get(self, *, force: bool = False) -> str | None:
        if self._file is None:
            return self._static
        with self._lock:
            now = self._clock()
            if force or self._value is None or now - self._read_at >= TOKEN_REFRESH_SECONDS:
                token = read_capped(self._file, MAX_TOKEN_BYTES, what="service-account token")
                self._value = token.decode().strip()
                self._read_at = now
            return self._value


class KubeClient:
    """Thread-safe JSON over HTTPS to one API server. Errors: `ApiError` for HTTP statuses;
    urllib3's `HTTPError` (or `OSError`) when the server cannot be reached, after urllib3's
    default retries."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        pool_size: int = 8,
    ) -> None:
        self.config = config
        self.server = config.server.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._token = _Token(config.token, config.token_file)
        self._basic = (
            urllib3.make_headers(basic_auth=f"{config.username}:{config.password}")
            if config.username is not None and config.password is not None
            else {}
        )
        pool_options: dict[str, Any] = {}
        if self.server.startswith("https://"):
            pool_options["ssl_context"] = config.ssl_context()
            if config.tls_server_name:
                pool_options["server_hostname"] = config.tls_server_name
                pool_options["assert_hostname"] = config.tls_server_name
            if not config.verify:
                pool_options["cert_reqs"] = ssl.CERT_NONE
                pool_options["assert_hostname"] = False
        self._pool = urllib3.PoolManager(maxsize=pool_size, **pool_options)

    @classmethod
    def from_environment(cls, kubeconfig: str | Path | None = None) -> KubeClient:
        """In-cluster when no kubeconfig is given and the service env is set, else kubeconfig."""
        if kubeconfig is None and SERVICE_HOST_ENV in os.environ:
            return cls(in_cluster_config())
        return cls(load_kubeconfig(kubeconfig))

    def close(self) -> None:
        self._pool.clear()

    # -- verbs ----------------------------------------------------------------------------
    def get(self, path: str, **query: Any) -> dict[str, Any]:
        return self._json("GET", path, query)

    def list(self, path: str, **query: Any) -> dict[str, Any]:
        """A collection; the result's `metadata.resourceVersion` starts a watch."""
        return self._json("GET", path, query)

    def patch(self, path: str, body: dict[str, Any], **query: Any) -> dict[str, Any]:
        """JSON merge patch (RFC 7386), the patch type custom resources accept."""
        return self._json("PATCH", path, query, body=body, content_type=MERGE_PATCH)

    def watch(
        self,
        path: str,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
        **query: Any,
    ) -> Iterator[WatchEvent]:
        """Events after `resource_version` until the server ends the watch (`timeout_seconds`).

        An ERROR event raises `ApiError` with its code: 410 (Gone) means the version is
        too old and the caller must list again."""
        params = dict(query, watch="true", timeoutSeconds=timeout_seconds)
        if resource_version:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        # The server ends the watch at timeout_seconds; the read timeout only catches a
        # connection that died silently.
        response = self._request(
            "GET", path, params, stream=True, read_timeout=timeout_seconds + 30
        )
        try:
            yield from watch_events(response.stream(None))
        finally:
            response.release_conn()

    # -- plumbing -------------------------------------------------------------------------
    def _json(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any],
        *,
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        response = self._request(method, path, query, body=body, content_type=content_type)
        return cast(dict[str, Any], json.loads(response.data or b"{}"))

    def _request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any],
        *,
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
        stream: bool = False,
        read_timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        url = self.server + path
        params = {k: _query_value(v) for k, v in query.items() if v is not None}
        if params:
            url += "?" + urlencode(params)
        payload = json.dumps(body).encode() if body is not None else None
        timeout = urllib3.Timeout(connect=self.connect_timeout, read=read_timeout or self.timeout)
        for attempt in (1, 2):
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self._basic}
            if content_type:
                headers["Content-Type"] = content_type
            token = self._token.get(force=attempt == 2)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            response = self._pool.request(
                method,
                url,
                body=payload,
                headers=headers,
                timeout=timeout,
                preload_content=not stream,
                redirect=False,
            )
            if response.status < 400:
                return response
            data = response.read() if stream else response.data
            response.release_conn()
            # 401 with a token file: the token rotated under us; read it again, once.
            if response.status == 401 and attempt == 1 and self.config.token_file is not None:
                continue
            raise _api_error(response.status, response.reason, data)
        raise AssertionError("unreachable")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _api_error(status: int, reason: str | None, data: bytes) -> ApiError:
    """The HTTP reason phrase, and the Status object's message when the body is one."""
    text = data.decode(errors="replace")
    with contextlib.suppress(ValueError):
        status_object = json.loads(text)
        if isinstance(status_object, dict) and status_object.get("kind") == "Status":
            reason = reason or str(status_object.get("reason") or "")
            return ApiError(status, reason, str(status_object.get("message") or ""))
    return ApiError(status, reason or "", text[:500])
