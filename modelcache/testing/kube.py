"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, no kubelet.

The envtest recipe: generated certs and service-account keys, RBAC authorization,
a static admin token (group system:masters), a kubeconfig file. Tests create Node
objects themselves and run agents as local processes.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import yaml

from modelcache.testing.pki import ApiserverPki, write_apiserver_pki
from modelcache.testing.ports import LOOPBACK, free_ports, wait_until
from modelcache.testing.process import ManagedProcess, stop_all
from modelcache.testing.toolchain import Toolchain, ensure_toolchain

ADMIN_USER = "modelcache-admin"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: pods reach the apiserver here


class KubeControlPlane:
    """Start with `start()` (or `with`), stop with `stop()`; `kubeconfig` is the file to use."""

    def __init__(
        self,
        *,
        toolchain: Toolchain | None = None,
        work_dir: Path | None = None,
        startup_timeout: float = 90.0,
        tie_to_parent: bool = True,
        host: str = LOOPBACK,
        extra_args: Sequence[str] = (),
        with_service_accounts: bool = False,
        prepare_pki: Callable[[ApiserverPki], None] | None = None,
    ) -> None:
        """`host`, `extra_args` and `with_service_accounts` (the ServiceAccount admission,
        on when a controller-manager runs) serve a cluster with kubelets."""
        self._toolchain = toolchain
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="modelcache-kube-"))
        self.startup_timeout = startup_timeout
        self.tie_to_parent = tie_to_parent
        self.host = host
        self.extra_args = list(extra_args)
        self.with_service_accounts = with_service_accounts
        self.prepare_pki = prepare_pki
        self.admin_token = secrets.token_urlsafe(32)
        self.etcd_port, self.etcd_peer_port, self.port = free_ports(3, host)
        self.kubeconfig = self.work_dir / "kubeconfig"
        self.processes: list[ManagedProcess] = []
        self.pki: ApiserverPki | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.work_dir / "pki" / "ca.crt"

    def start(self) -> KubeControlPlane:
        toolchain = self._toolchain or ensure_toolchain()
        try:
            self._start_etcd(toolchain)
            self._start_apiserver(toolchain)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd(self, toolchain: Toolchain) -> None:
        peer = f"http://{LOOPBACK}:{self.etcd_peer_port}"
        client = f"http://{LOOPBACK}:{self.etcd_port}"
        etcd = ManagedProcess(
            "etcd",
            [
                str(toolchain.etcd),
                "--name=modelcache-test",
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=modelcache-test={peer}",
                "--unsafe-no-fsync=true",  # throwaway data: speed over durability
                "--log-level=warn",
            ],
            log_path=self.work_dir / "logs" / "etcd.log",
            tie_to_parent=self.tie_to_parent,
        ).start()
        self.processes.append(etcd)
        wait_until(
            lambda: _http_ok(f"{client}/health"),
            timeout=self.startup_timeout,
            what="etcd",
            alive=etcd.exit_reason,
        )

    def _start_apiserver(self, toolchain: Toolchain) -> None:
        pki = write_apiserver_pki(
            self.work_dir / "pki", ip_addresses=tuple({LOOPBACK, self.host, SERVICE_IP})
        )
        self.pki = pki
        if self.prepare_pki is not None:  # e.g. client certs the extra args name
            self.prepare_pki(pki)
        tokens = self.work_dir / "tokens.csv"
        tokens.touch(mode=0o600)
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(toolchain.kube_apiserver),
                f"--etcd-servers=http://{LOOPBACK}:{self.etcd_port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self.port}",
                f"--cert-dir={self.work_dir / 'pki'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={tokens}",
                *(
                    []
                    if any(a.startswith("--authorization-mode") for a in self.extra_args)
                    else ["--authorization-mode=RBAC"]
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                *(
                    []
                    if self.with_service_accounts
                    # No controller-manager publishes the root CA for SA volumes here.
                    else ["--disable-admission-plugins=ServiceAccount"]
                ),
                "--v=1",
                *self.extra_args,
            ],
            log_path=self.work_dir / "logs" / "kube-apiserver.log",
            tie_to_parent=self.tie_to_parent,
        ).start()
        self.processes.append(apiserver)
        self._write_kubeconfig(pki.ca_cert)
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        wait_until(
            lambda: _http_ok(f"{self.url}/readyz", token=self.admin_token, context=context),
            timeout=self.startup_timeout,
            what="kube-apiserver /readyz",
            alive=apiserver.exit_reason,
            interval=0.25,
        )

    def _write_kubeconfig(self, ca_cert: Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modelcache-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(
                            ca_cert.read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.admin_token}}],
            "contexts": [
                {
                    "name": "modelcache-test",
                    "context": {"cluster": "modelcache-test", "user": ADMIN_USER},
                }
            ],
            "current-context": "modelcache-test",
        }
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))

    def stop(self) -> None:
        """Stop apiserver then etcd (by PID), then remove the work dir if we made it."""
        stop_all(self.processes)
        self.processes.clear()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KubeControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _http_ok(url: str, *, token: str | None = None, context: ssl.SSLContext | None = None) -> bool:
    request = urllib.request.Request(url)  # noqa: S310 - our own loopback URL
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
