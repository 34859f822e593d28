"""A private dockerd for building images, started and stopped by PID.

It keeps its layers under the cache dir and its socket under its own run dir, and
it touches no network setting of the machine: no bridge, no iptables rules, no
ip_forward (builds use the host network). A user's own Docker is never used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from modelcache.testing.cache import cache_dir
from modelcache.testing.ports import wait_until
from modelcache.testing.process import ManagedProcess

RUN_DIR = Path("/run/modelcache-docker")


class DockerError(RuntimeError):
    """A docker command failed; the message has its output's tail."""


class DockerDaemon:
    """`with DockerDaemon() as docker: docker.run("build", ...)`."""

    def __init__(
        self,
        *,
        data_root: Path | None = None,
        run_dir: Path = RUN_DIR,
        extra_args: Sequence[str] = (),
        tie_to_parent: bool = True,
    ) -> None:
        """`extra_args`: more dockerd flags (the kind daemon's runtime and cgroup parent)."""
        self.data_root = data_root or cache_dir() / "docker"
        self.run_dir = run_dir
        self.extra_args = list(extra_args)
        self.tie_to_parent = tie_to_parent
        self.socket = run_dir / "docker.sock"
        self.process: ManagedProcess | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_BUILDKIT": "0",  # Debian's docker.io has no buildx; the classic builder
            "DOCKER_CONFIG": str(self.run_dir / "client"),
        }

    def start(self) -> DockerDaemon:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerError("dockerd not found (Debian package docker.io)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "dockerd",
            [
                dockerd,
                f"--data-root={self.data_root}",
                f"--exec-root={self.run_dir / 'exec'}",
                f"--pidfile={self.run_dir / 'dockerd.pid'}",
                f"--host=unix://{self.socket}",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=overlay2",
                *self.extra_args,
            ],
            log_path=self.run_dir / "dockerd.log",
            stop_grace=20.0,
            tie_to_parent=self.tie_to_parent,
        ).start()
        try:
            wait_until(
                self._answers,
                timeout=60,
                what="dockerd",
                alive=self.process.exit_reason,
                interval=0.25,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env=self.env,
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def run(self, *args: str, cwd: Path | None = None, stdin: bytes | None = None) -> str:
        """One docker command against this daemon; its stdout, or DockerError with the tail."""
        result = subprocess.run(
            ["docker", *args],
            env=self.env,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stdout.decode(errors="replace").splitlines()[-15:])
            err = result.stderr.decode(errors="replace").strip()
            raise DockerError(f"docker {' '.join(args[:3])} failed: {err}\n{tail}")
        return result.stdout.decode(errors="replace")

    def save(self, image: str, target: Path) -> None:
        """Write `image` as a tarball atomically (a crash never leaves half a tarball)."""
        partial = target.with_name(target.name + ".partial")
        self.run("save", "-o", str(partial), image)
        os.replace(partial, target)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        unmount_under(self.run_dir)
        unmount_under(self.data_root)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def mounts_under(roots: Sequence[Path]) -> list[str]:
    """Mount points at or below any of `roots`, deepest first."""
    prefixes = [str(r).rstrip("/") for r in roots]
    found: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1].encode().decode("unicode_escape")
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)


def unmount_under(*roots: Path) -> list[str]:
    """Lazily unmount everything mounted at or below `roots` (stacked mounts too)."""
    undone: list[str] = []
    for _ in range(5):
        points = mounts_under(roots)
        if not points:
            break
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            undone.append(point)
    return undone
