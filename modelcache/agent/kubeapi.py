"""A small REST client for the few Kubernetes API calls the agent makes.

The agent GETs a Secret, LISTs the pods on its node, LISTs and WATCHes its own
NodeCache and merge-patches the NodeCache's status subresource. The official
`kubernetes` package cost an idle agent ~27 MB of RSS for that (107 -> 80 MB,
docs/benchmarks.md "Rollback"), so the agent talks to the API server over
urllib3 (TLS, pooling, retries) and reads kubeconfig files with PyYAML. The
operator keeps the `kubernetes` package.

Configuration comes from the pod's service account (`in_cluster_config`: the
token file is re-read every minute, as client-go does, because projected tokens
rotate) or from kubeconfig files (`load_kubeconfig`: token, token file, client
certificate and key as files or inline data, basic auth; CA as file or data).
Exec and auth-provider plugins are not supported: the agent runs in-cluster.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

import urllib3
import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_ENV = "KUBERNETES_SERVICE_PORT"
TOKEN_REFRESH_SECONDS = 60.0
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "modelcache-agent"


class ConfigError(Exception):
    """No usable cluster configuration (missing file, context, or an unsupported auth kind)."""


class ApiError(Exception):
    """The API server answered with an error status (or a watch delivered an ERROR event)."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"({status}) {reason}" + (f": {body}" if body else ""))
        self.status = status
        self.reason = reason
        self.body = body


@dataclass(frozen=True)
class ClusterConfig:
    """Where the API server is and how to authenticate to it.

    `token_file` wins over `token` and is re-read every `TOKEN_REFRESH_SECONDS`.
    `client_cert`/`client_key` and `ca_data` are PEM bytes, whatever their origin.
    """

    server: str
    ca_data: bytes | None = None
    ca_file: Path | None = None
    verify: bool = True
    tls_server_name: str | None = None
    token: str | None = None
    token_file: Path | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    username: str | None = None
    password: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """Verification against the cluster CA (or the system's), client certificate loaded."""
        if self.ca_data is not None:
            context = ssl.create_default_context(cadata=self.ca_data.decode())
        elif self.ca_file is not None:
            context = ssl.create_default_context(cafile=str(self.ca_file))
        else:
            context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None and self.client_key is not None:
            _load_cert_chain(context, self.client_cert, self.client_key)
        return context


def _load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`ssl` loads a certificate chain only from files: write them privately, load, remove."""
    with tempfile.TemporaryDirectory(prefix="modelcache-kube-") as directory:
        cert_path = Path(directory) / "client.crt"
        key_path = Path(directory) / "client.key"
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(str(cert_path), str(key_path))


# -- configuration -----------------------------------------------------------------------


def in_cluster_config(
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> ClusterConfig:
    """The pod's service account: API server from the environment, token and CA from files."""
    env = os.environ if environ is None else environ
    host, port = env.get(SERVICE_HOST_ENV), env.get(SERVICE_PORT_ENV)
    if not host or not port:
        raise ConfigError(f"not in a cluster: {SERVICE_HOST_ENV} or {SERVICE_PORT_ENV} unset")
    token_file = service_account_dir / "token"
    ca_file = service_account_dir / "ca.crt"
    for path in (token_file, ca_file):
        if not path.is_file():
            raise ConfigError(f"service account file {path} missing")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return ClusterConfig(server=f"https://{host}:{port}", ca_file=ca_file, token_file=token_file)


def default_kubeconfig_paths(environ: Mapping[str, str] | None = None) -> list[Path]:
    """$KUBECONFIG (a path list) or ~/.kube/config, as kubectl reads them."""
    env = os.environ if environ is None else environ
    value = env.get("KUBECONFIG")
    if value:
        return [Path(p).expanduser() for p in value.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def load_kubeconfig(
    paths: str | Path | Iterable[str | Path] | None = None, *, context: str | None = None
) -> ClusterConfig:
    """The cluster and user of `context` (default: current-context) from kubeconfig files.

    Several files merge as kubectl merges them: the first file that names a context,
    cluster or user (or sets current-context) wins. Relative paths in a file are
    relative to that file's directory.
    """
    if paths is None:
        files = default_kubeconfig_paths()
    elif isinstance(paths, (str, Path)):
        files = [Path(p).expanduser() for p in str(paths).split(os.pathsep) if p]
    else:
        files = [Path(p).expanduser() for p in paths]
    merged = _merge_kubeconfigs(files)
    name = context or merged.current_context
    if not name:
        raise ConfigError(f"no current-context in {', '.join(map(str, files))}")
    if name not in merged.contexts:
        raise ConfigError(f"context {name!r} not found in {', '.join(map(str, files))}")
    ctx, _ = merged.contexts[name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in merged.clusters:
        raise ConfigError(f"context {name!r}: cluster {cluster_name!r} not found")
    cluster, cluster_dir = merged.clusters[cluster_name]
    user, user_dir = (
        merged.users.get(user_name, ({}, cluster_dir)) if user_name else ({}, cluster_dir)
    )
    return _cluster_config(cluster, cluster_dir, user, user_dir)


@dataclass
class _Merged:
    current_context: str | None = None
    contexts: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    clusters: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)


def _merge_kubeconfigs(files: list[Path]) -> _Merged:
    merged = _Merged()
    found = False
    for path in files:
        if not path.is_file():
            continue
        found = True
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from error
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: not a kubeconfig (a mapping expected)")
        if merged.current_context is None and document.get("current-context"):
            merged.current_context = str(document["current-context"])
        for key, target, inner in (
            ("contexts", merged.contexts, "context"),
            ("clusters", merged.clusters, "cluster"),
            ("users", merged.users, "user"),
        ):
            for item in document.get(key) or []:
                if isinstance(item, dict) and "name" in item and item["name"] not in target:
                    target[str(item["name"])] = (dict(item.get(inner) or {}), path.parent)
    if not found:
        raise ConfigError(f"no kubeconfig file found at {', '.join(map(str, files))}")
    return merged


def _cluster_config(
    cluster: dict[str, Any], cluster_dir: Path, user: dict[str, Any], user_dir: Path
) -> ClusterConfig:
    server = cluster.get("server")
    if not server:
        raise ConfigError("kubeconfig cluster has no server")
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            "kubeconfig user uses an exec or auth-provider plugin, which the agent does not "
            "support: give it a token, a token file or a client certificate"
        )
    token_file = user.get("tokenFile")
    return ClusterConfig(
        server=str(server).rstrip("/"),
        ca_data=_data_or_file(cluster, "certificate-authority", cluster_dir),
        verify=not cluster.get("insecure-skip-tls-verify", False),
        tls_server_name=cluster.get("tls-server-name"),
        token=user.get("token"),
        token_file=_resolve(token_file, user_dir) if token_file else None,
        client_cert=_data_or_file(user, "client-certificate", user_dir),
        client_key=_data_or_file(user, "client-key", user_dir),
        username=user.get("username"),
        password=user.get("password"),
    )


def _data_or_file(section: dict[str, Any], key: str, directory: Path) -> bytes | None:
    """`KEY-data` (base64) wins over `KEY` (a path), as in kubectl."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError as error:
            raise ConfigError(f"kubeconfig {key}-data is not valid base64") from error
    path = section.get(key)
    if path:
        resolved = _resolve(path, directory)
        try:
            return resolved.read_bytes()
        except OSError as error:
            raise ConfigError(f"kubeconfig {key} {resolved}: {error}") from error
    return None


def _resolve(path: str, directory: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else directory / candidate


# -- the client --------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


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
                self._value = self._file.read_text().strip()
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
            for line in iter_lines(response.stream(None)):
                event = json.loads(line)
                kind = str(event.get("type", ""))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(
                        int(obj.get("code") or 500),
                        str(obj.get("reason") or "watch error"),
                        str(obj.get("message") or ""),
                    )
                yield WatchEvent(kind, obj)
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


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole non-empty lines from a stream of chunks that split lines anywhere."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


# -- paths -------------------------------------------------------------------------------


def custom_objects_path(
    group: str,
    version: str,
    plural: str,
    name: str | None = None,
    *,
    namespace: str | None = None,
    subresource: str | None = None,
) -> str:
    """/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUBRESOURCE]]"""
    path = f"/apis/{group}/{version}"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    return _named(path + f"/{plural}", name, subresource)


def core_path(
    resource: str,
    name: str | None = None,
    *,
    namespace: str | None = None,
    subresource: str | None = None,
) -> str:
    """/api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUBRESOURCE]]"""
    path = "/api/v1"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    return _named(path + f"/{resource}", name, subresource)


def _named(path: str, name: str | None, subresource: str | None) -> str:
    if name is None:
        return path
    path += f"/{quote(name, safe='')}"
    return path + f"/{subresource}" if subresource else path
