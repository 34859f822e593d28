"""Where the API server is and how to authenticate to it: the pod's service account
(`in_cluster_config`) or kubeconfig files (`load_kubeconfig`: token, token file, client
certificate and key as files or inline data, basic auth; CA as file or data). Exec and
auth-provider plugins are not supported: the agent runs in-cluster."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelcache.agent.config import yaml_problem
from modelcache.agent.kube.errors import KubeconfigError
from modelcache.fs import FileRefused, read_capped
from modelcache.problems import one_line

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_ENV = "KUBERNETES_SERVICE_PORT"
MAX_KUBECONFIG_BYTES = 1024 * 1024  # a kubeconfig with embedded certificates is a few KiB


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


def in_cluster_config(
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> ClusterConfig:
    """The pod's service account: API server from the environment, token and CA from files."""
    env = os.environ if environ is None else environ
    host, port = env.get(SERVICE_HOST_ENV), env.get(SERVICE_PORT_ENV)
    if not host or not port:
        raise KubeconfigError(f"not in a cluster: {SERVICE_HOST_ENV} or {SERVICE_PORT_ENV} unset")
    token_file = service_account_dir / "token"
    ca_file = service_account_dir / "ca.crt"
    for path in (token_file, ca_file):
        if not path.is_file():
            raise KubeconfigError(f"service account file {path} missing")
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
        raise KubeconfigError(f"no current-context in {', '.join(map(str, files))}")
    if name not in merged.contexts:
        raise KubeconfigError(f"context {name!r} not found in {', '.join(map(str, files))}")
    ctx, _ = merged.contexts[name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in merged.clusters:
        raise KubeconfigError(f"context {name!r}: cluster {cluster_name!r} not found")
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
        if not path.exists():
            continue
        found = True
        try:
            document = yaml.safe_load(read_capped(path, MAX_KUBECONFIG_BYTES, what="kubeconfig"))
        except (FileRefused, UnicodeDecodeError) as error:
            raise KubeconfigError(f"{path}: {one_line(error)}") from None
        except yaml.YAMLError as error:  # never its snippet: the file holds credentials
            raise KubeconfigError(f"{path}: not valid YAML{yaml_problem(error)}") from None
        document = document or {}
        if not isinstance(document, dict):
            raise KubeconfigError(f"{path}: not a kubeconfig (a mapping expected)")
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
        raise KubeconfigError(f"no kubeconfig file found at {', '.join(map(str, files))}")
    return merged


def _cluster_config(
    cluster: dict[str, Any], cluster_dir: Path, user: dict[str, Any], user_dir: Path
) -> ClusterConfig:
    server = cluster.get("server")
    if not server:
        raise KubeconfigError("kubeconfig cluster has no server")
    if "exec" in user or "auth-provider" in user:
        raise KubeconfigError(
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
            raise KubeconfigError(f"kubeconfig {key}-data is not valid base64") from error
    path = section.get(key)
    if path:
        resolved = _resolve(path, directory)
        try:
            return resolved.read_bytes()
        except OSError as error:
            raise KubeconfigError(f"kubeconfig {key} {resolved}: {error}") from error
    return None


def _resolve(path: str, directory: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else directory / candidate
