"""The agent's REST client: kubeconfig and in-cluster configuration, plumbing, imports."""

from __future__ import annotations

import base64
import itertools
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from modelcache.agent.kube import (
    ApiError,
    ClusterConfig,
    KubeClient,
    KubeconfigError,
    core_path,
    custom_objects_path,
    in_cluster_config,
    iter_lines,
    load_kubeconfig,
)
from modelcache.agent.kube import client as kube_client
from modelcache.testing.pki import ApiserverPki, write_apiserver_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ApiserverPki:
    return write_apiserver_pki(tmp_path_factory.mktemp("pki"))


def _kubeconfig(
    path: Path,
    cluster: dict[str, Any],
    user: dict[str, Any],
    *,
    name: str = "test",
    current: str | None = "test",
) -> Path:
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }
    if current is not None:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- kubeconfig --------------------------------------------------------------------------


def test_token_and_ca_data_as_the_test_control_plane_writes_them(
    tmp_path: Path, pki: ApiserverPki
) -> None:
    ca = pki.ca_cert.read_bytes()
    path = _kubeconfig(
        tmp_path / "kubeconfig",
        {"server": "https://127.0.0.1:6443/", "certificate-authority-data": _b64(ca)},
        {"token": "s3cret"},
    )
    config = load_kubeconfig(path)
    assert config.server == "https://127.0.0.1:6443"
    assert config.ca_data == ca
    assert config.token == "s3cret"
    assert config.client_cert is None
    assert config.token_file is None
    context = config.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_client_certificate_files_relative_to_the_kubeconfig(
    tmp_path: Path, pki: ApiserverPki
) -> None:
    (tmp_path / "certs").mkdir()
    for source, target in (
        (pki.ca_cert, "ca.crt"),
        (pki.serving_cert, "client.crt"),
        (pki.serving_key, "client.key"),
    ):
        (tmp_path / "certs" / target).write_bytes(source.read_bytes())
    path = _kubeconfig(
        tmp_path / "kubeconfig",
        {"server": "https://example:6443", "certificate-authority": "certs/ca.crt"},
        {"client-certificate": "certs/client.crt", "client-key": "certs/client.key"},
    )
    config = load_kubeconfig(path)
    assert config.ca_data == pki.ca_cert.read_bytes()
    assert config.client_cert == pki.serving_cert.read_bytes()
    assert config.client_key == pki.serving_key.read_bytes()
    assert config.token is None
    config.ssl_context()  # loads the chain through private temporary files


def test_certificate_data_wins_over_files(tmp_path: Path, pki: ApiserverPki) -> None:
    path = _kubeconfig(
        tmp_path / "kubeconfig",
        {
            "server": "https://example:6443",
            "certificate-authority": "/nonexistent/ca.crt",
            "certificate-authority-data": _b64(pki.ca_cert.read_bytes()),
        },
        {
            "client-certificate": "/nonexistent/client.crt",
            "client-certificate-data": _b64(pki.serving_cert.read_bytes()),
            "client-key-data": _b64(pki.serving_key.read_bytes()),
        },
    )
    config = load_kubeconfig(path)
    assert config.client_cert == pki.serving_cert.read_bytes()
    assert config.client_key == pki.serving_key.read_bytes()
    config.ssl_context()


def test_missing_certificate_file_is_a_config_error(tmp_path: Path) -> None:
    path = _kubeconfig(
        tmp_path / "kubeconfig",
        {"server": "https://example:6443", "certificate-authority": "missing.crt"},
        {"token": "t"},
    )
    with pytest.raises(KubeconfigError, match=r"missing\.crt"):
        load_kubeconfig(path)


def test_token_file_insecure_and_tls_server_name(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    path = _kubeconfig(
        tmp_path / "kubeconfig",
        {
            "server": "https://10.0.0.1",
            "insecure-skip-tls-verify": True,
            "tls-server-name": "kubernetes",
        },
        {"tokenFile": "token"},
    )
    config = load_kubeconfig(path)
    assert config.token_file == tmp_path / "token"
    assert not config.verify
    assert config.tls_server_name == "kubernetes"
    assert config.ssl_context().verify_mode == ssl.CERT_NONE


def test_several_files_merge_first_wins_and_context_override(tmp_path: Path) -> None:
    first = _kubeconfig(
        tmp_path / "a", {"server": "https://a"}, {"token": "ta"}, name="a", current="b"
    )
    second = _kubeconfig(
        tmp_path / "b", {"server": "https://b"}, {"token": "tb"}, name="b", current="a"
    )
    shadow = _kubeconfig(tmp_path / "c", {"server": "https://shadow"}, {}, name="a")
    paths = f"{first}:{tmp_path / 'absent'}:{second}:{shadow}"
    assert load_kubeconfig(paths).server == "https://b"  # current-context from the 1st file
    assert load_kubeconfig(paths, context="a").server == "https://a"  # not the shadow
    assert load_kubeconfig([shadow, first], context="a").server == "https://shadow"


def test_kubeconfig_env_path_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _kubeconfig(tmp_path / "k", {"server": "https://env"}, {"token": "t"})
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{path}")
    assert load_kubeconfig().server == "https://env"


@pytest.mark.parametrize(
    ("user", "current", "context", "match"),
    [
        ({"exec": {"command": "aws"}}, "test", None, "exec"),
        ({"token": "t"}, None, None, "no current-context"),
        ({"token": "t"}, "test", "other", "'other' not found"),
    ],
)
def test_config_errors(
    tmp_path: Path, user: dict[str, Any], current: str | None, context: str | None, match: str
) -> None:
    path = _kubeconfig(tmp_path / "k", {"server": "https://x"}, user, current=current)
    with pytest.raises(KubeconfigError, match=match):
        load_kubeconfig(path, context=context)


def test_no_kubeconfig_file(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="no kubeconfig"):
        load_kubeconfig(tmp_path / "absent")


# -- in-cluster --------------------------------------------------------------------------


def _service_account(directory: Path, pki: ApiserverPki) -> Path:
    directory.mkdir()
    (directory / "token").write_text("sa-token")
    (directory / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
    return directory


def test_in_cluster(tmp_path: Path, pki: ApiserverPki) -> None:
    sa = _service_account(tmp_path / "sa", pki)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = in_cluster_config(env, sa)
    assert config.server == "https://10.0.0.1:443"
    assert config.token_file == sa / "token"
    assert config.token is None
    assert config.ca_file == sa / "ca.crt"
    config.ssl_context()
    v6 = in_cluster_config({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, sa)
    assert v6.server == "https://[fd00::1]:443"


def test_in_cluster_errors(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="not in a cluster"):
        in_cluster_config({}, tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeconfigError, match="token"):
        in_cluster_config(env, tmp_path)


def test_from_environment_prefers_a_given_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _kubeconfig(tmp_path / "k", {"server": "http://127.0.0.1:1"}, {"token": "t"})
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    client = KubeClient.from_environment(path)
    assert client.server == "http://127.0.0.1:1"
    client.close()


def test_token_file_is_reread_once_old(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    clock = [1000.0]
    token = kube_client._Token(None, token_file, clock=lambda: clock[0])
    assert token.get() == "one"
    token_file.write_text("two")
    clock[0] += kube_client.TOKEN_REFRESH_SECONDS - 1
    assert token.get() == "one"
    assert token.get(force=True) == "two"
    token_file.write_text("three")
    clock[0] += kube_client.TOKEN_REFRESH_SECONDS
    assert token.get() == "three"
    assert kube_client._Token("static", None).get(force=True) == "static"


# -- pure helpers ------------------------------------------------------------------------


def test_iter_lines_joins_chunks_across_boundaries() -> None:
    chunks = [b'{"a":', b'1}\n{"b"', b":2}\n\n", b'{"c":3}']
    assert list(iter_lines(chunks)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_paths() -> None:
    assert (
        custom_objects_path(
            "modelcache.io", "v1alpha1", "nodecaches", "gpu-1", subresource="status"
        )
        == "/apis/modelcache.io/v1alpha1/nodecaches/gpu-1/status"
    )
    assert (
        custom_objects_path("g", "v", "things", namespace="ns") == "/apis/g/v/namespaces/ns/things"
    )
    assert core_path("pods", namespace="team-a") == "/api/v1/namespaces/team-a/pods"
    assert core_path("secrets", "a/b", namespace="x") == "/api/v1/namespaces/x/secrets/a%2Fb"


def test_api_error_from_status_body() -> None:
    body = json.dumps({"kind": "Status", "reason": "NotFound", "message": 'x "y" not found'})
    error = kube_client._api_error(404, "Not Found", body.encode())
    assert (error.status, error.reason, error.body) == (404, "Not Found", 'x "y" not found')
    raw = kube_client._api_error(502, "Bad Gateway", b"<html>")
    assert (raw.status, raw.body) == (502, "<html>")


# -- the client against a scripted HTTP server -------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[tuple[int, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length) if length else b"",
                    }
                )
                status, body = server.replies.pop(0)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply()

            def do_PATCH(self) -> None:
                self._reply()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self._thread.start()


@pytest.fixture
def server() -> Iterator[_Server]:
    fake = _Server()
    yield fake
    fake.http.shutdown()
    fake.http.server_close()


def test_merge_patch_and_query(server: _Server) -> None:
    client = KubeClient(ClusterConfig(server=server.url, token="t"))
    server.replies = [(200, b'{"ok": 1}'), (200, b'{"items": []}')]
    assert client.patch("/apis/g/v/things/a/status", {"status": {"x": 1}}) == {"ok": 1}
    client.list("/api/v1/pods", fieldSelector="spec.nodeName=n", labelSelector=None)
    patch, listing = server.requests
    assert patch["method"] == "PATCH"
    assert patch["headers"]["Content-Type"] == "application/merge-patch+json"
    assert patch["headers"]["Authorization"] == "Bearer t"
    assert json.loads(patch["body"]) == {"status": {"x": 1}}
    assert listing["path"] == "/api/v1/pods?fieldSelector=spec.nodeName%3Dn"
    client.close()


def test_401_rereads_the_token_file_once(server: _Server, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old")
    client = KubeClient(ClusterConfig(server=server.url, token_file=token_file))
    server.replies = [(200, b"{}")]
    client.get("/api/v1/namespaces")
    token_file.write_text("new")
    server.replies = [(401, b"{}"), (200, b'{"a": 1}')]
    assert client.get("/api/v1/namespaces") == {"a": 1}
    assert [r["headers"]["Authorization"] for r in server.requests] == [
        "Bearer old",
        "Bearer old",
        "Bearer new",
    ]
    server.replies = [(401, b"{}"), (401, b"{}")]
    with pytest.raises(ApiError) as raised:
        client.get("/api/v1/namespaces")
    assert raised.value.status == 401
    client.close()


def test_watch_events_bookmarks_and_410(server: _Server) -> None:
    client = KubeClient(ClusterConfig(server=server.url))
    lines = [
        {"type": "ADDED", "object": {"metadata": {"name": "a"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
    ]
    server.replies = [(200, b"\n".join(json.dumps(line).encode() for line in lines) + b"\n")]
    seen: list[str] = []

    def consume() -> None:
        for event in client.watch("/apis/g/v/things", resource_version="5", timeout_seconds=7):
            seen.append(event.type)

    with pytest.raises(ApiError) as raised:
        consume()
    assert seen == ["ADDED", "BOOKMARK"]
    assert (raised.value.status, raised.value.reason) == (410, "Expired")
    path = server.requests[0]["path"]
    assert "watch=true" in path
    assert "resourceVersion=5" in path
    assert "timeoutSeconds=7" in path
    assert "allowWatchBookmarks=true" in path
    client.close()


# -- what the agent process imports ------------------------------------------------------

AGENT_IMPORTS = """
import sys
import modelcache.cli.main
from modelcache.cli import agent
from prometheus_client import start_http_server
from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import EventLog
from modelcache.agent.daemon import run_kubernetes
from modelcache.agent.kube import KubeClient
from modelcache.agent.kubeagent import KubeAgent
from modelcache.agent.metrics import AgentMetrics
from modelcache.agent.scrubber import Scrubber
from modelcache.store import Store
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
print(sorted(m for m in sys.modules if m.split(".")[0] == "kubernetes"), rss // 1024)
"""


def test_the_agent_in_kubernetes_mode_does_not_import_kubernetes() -> None:
    out = subprocess.run(
        [sys.executable, "-c", AGENT_IMPORTS], capture_output=True, text=True, check=True
    ).stdout.split("]")
    assert out[0] == "[", f"kubernetes modules imported: {out[0]}]"
    rss_mb = int(out[1])
    # 48 MB measured (Python 3.11, 2026-11), 51 MB when it imported `kubernetes`: that
    # client builds its models on first use, so its cost shows in a running agent (idle
    # VmRSS 107 -> 80 MB, bench/rollback.py). This bound catches large new imports.
    assert rss_mb < 64, f"import-time VmRSS {rss_mb} MB"


@pytest.mark.parametrize(
    "data",
    [
        b"token: SECRETTOKEN\n  bad: [indent\n",
        b"users: [{name: x, user: {token: SECRETTOKEN}}\n",
        b"!!python/object SECRETTOKEN\n",
        b"\x00SECRETTOKEN",
    ],
)
def test_a_kubeconfig_that_is_not_yaml_is_named_never_echoed(tmp_path: Path, data: bytes) -> None:
    """A kubeconfig holds credentials: an error about it names the file and the problem."""
    path = tmp_path / "config"
    path.write_bytes(data)
    with pytest.raises(KubeconfigError) as refused:
        load_kubeconfig(path)
    assert str(path) in str(refused.value)
    assert "SECRETTOKEN" not in str(refused.value)


def test_a_fifo_as_the_kubeconfig_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "config"
    os.mkfifo(path)
    with pytest.raises(KubeconfigError, match="is a FIFO"):
        load_kubeconfig(path)


@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    cuts=st.lists(st.integers(0, 400), max_size=10),
)
def test_iter_lines_gives_the_lines_however_the_stream_is_cut(
    lines: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(iter_lines(chunks)) == [line for line in lines if line.strip()]


def test_a_watch_line_past_its_cap_is_an_error_not_memory() -> None:
    endless = (b"x" * 1024 for _ in range(10_000))  # 10 MiB without a newline
    with pytest.raises(ApiError, match="watch event over 65,536 bytes"):
        list(iter_lines(endless, limit=64 * 1024))
