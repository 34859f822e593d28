"""The kind node image, assembled here as kind's own builder does, with no registry.

`kind build node-image` fetches every image it does not build itself, and this machine
reaches no registry. So the node is a Debian bookworm rootfs (mmdebstrap) with kind's
base files from its module, the pinned kubeadm, kubelet and kubectl, and the images
kubeadm runs made from the binaries the harness builds, imported into the node's
containerd before `docker commit`. The image stays in the kind daemon's data root,
labelled with a hash of its pins: unchanged pins find it and build nothing.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from modelcache.testing.docker import DockerDaemon
from modelcache.testing.images import (
    COREDNS_IMAGE,
    DEBIAN_SUITE,
    PAUSE_IMAGE,
    ImageBuildError,
    ImageTarball,
    _debian_mirror,
    _digest,
    _run,
    images_dir,
)
from modelcache.testing.toolchain import (
    ETCD_VERSION,
    KIND_VERSION,
    KUBE_BUILD,
    KUBERNETES_VERSION,
    KindToolchain,
    NodeToolchain,
    Toolchain,
)

Report = Callable[[str], None]
NODE_IMAGE = "modelcache.local/kind-node"
BASE_IMAGE = "modelcache.local/kind-base"
KEY_LABEL = "modelcache.kindnode"
RECIPE = "v1"  # change when the assembly below changes: it is part of the key
# What kind's base image installs (images/base/Dockerfile), from Debian's packages.
NODE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "fuse-overlayfs",
    "e2fsprogs",
    "bash",
    "ca-certificates",
    "curl",
    "jq",
    "procps",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iputils-ping",
)
# Also imported: the sandbox image kind's containerd config names, beside kubeadm's.
EXTRA_IMAGES = ("registry.k8s.io/pause:3.10",)
SCRATCH_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")


def node_image_key(pause: ImageTarball, coredns: ImageTarball) -> str:
    """The node image's cache key: every pin that goes into it, and the content keys of
    the pause and CoreDNS images (their tarballs are named by their inputs)."""
    parts = [KIND_VERSION, KUBE_BUILD, ETCD_VERSION, DEBIAN_SUITE, RECIPE, *NODE_PACKAGES]
    parts += [pause.tarball.name, coredns.tarball.name]
    return _digest(p.encode() for p in parts)


def base_key() -> str:
    return _digest(p.encode() for p in (KIND_VERSION, DEBIAN_SUITE, RECIPE, *NODE_PACKAGES))


def image_source(ref: str) -> str:
    """What a kubeadm image is made of: `scratch:<binary>`, `base:kube-proxy` (it needs
    iptables and conntrack), `coredns` or `pause` (the project's images, retagged)."""
    name = ref.rsplit("/", 1)[-1].split(":", 1)[0]
    if name in SCRATCH_COMPONENTS:
        return f"scratch:{name}"
    if name == "kube-proxy":
        return "base:kube-proxy"
    if name in ("coredns", "pause"):
        return name
    raise ValueError(f"kubeadm asks for an image this harness cannot make: {ref}")


def base_rootfs_hooks(kind_module: Path) -> list[str]:
    """mmdebstrap hooks that make the rootfs what kind's base image is (images/base)."""
    files = kind_module / "images" / "base" / "files"
    return [
        f'cp -r {files}/usr/local/bin/. "$1/usr/local/bin/"; chmod 755 "$1"/usr/local/bin/*',
        f'mkdir -p "$1/kind"; cp -r {files}/kind/. "$1/kind/"; '
        'chmod 755 "$1/kind" "$1/kind/bin" "$1"/kind/bin/*',
        f'cp {files}/etc/crictl.yaml "$1/etc/"; mkdir -p "$1/etc/containerd"; '
        f'cp {files}/etc/containerd/* "$1/etc/containerd/"; '
        f'cp {files}/etc/default/* "$1/etc/default/"; '
        f'cp {files}/etc/sysctl.d/* "$1/etc/sysctl.d/"; '
        f'cp -r {files}/etc/systemd/system/. "$1/etc/systemd/system/"',
        # What kind's Dockerfile removes so systemd boots in a container.
        'find "$1"/lib/systemd/system/sysinit.target.wants/ -name '
        "systemd-tmpfiles-setup.service -delete; "
        'rm -f "$1"/lib/systemd/system/multi-user.target.wants/* '
        '"$1"/etc/systemd/system/*.wants/* "$1"/lib/systemd/system/local-fs.target.wants/* '
        '"$1"/lib/systemd/system/sockets.target.wants/*udev* '
        '"$1"/lib/systemd/system/sockets.target.wants/*initctl* '
        '"$1"/lib/systemd/system/basic.target.wants/*; '
        'echo ReadKMsg=no >> "$1/etc/systemd/journald.conf"',
        # kind expects these paths; Debian puts the same programs elsewhere.
        'ln -sf /usr/bin/containerd "$1/usr/local/bin/containerd"; '
        'ln -sf /usr/bin/ctr "$1/usr/local/bin/ctr"; '
        'ln -sf /usr/sbin/runc "$1/usr/local/sbin/runc"; mkdir -p "$1/opt/cni"; '
        'ln -sfn /usr/lib/cni "$1/opt/cni/bin"; mkdir -p "$1/etc/kubernetes/manifests"',
        'chroot "$1" systemctl enable kubelet.service containerd.service '
        'undo-mount-hacks.service; chroot "$1" systemctl mask systemd-binfmt.service',
        # The spec kind's containerd starts containers from (its Dockerfile does the same).
        'chroot "$1" ctr oci spec | jq \'.hooks.createContainer += '
        '[{"path": "/kind/bin/mount-product-files.sh"}] | del(.process.rlimits)\' '
        '> "$1/etc/containerd/cri-base.json"',
        'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* '
        '"$1"/usr/share/doc/* "$1"/usr/share/man/*',
    ]


class NodeImageBuilder:
    """Builds the node image in the kind daemon (only when its key is not there)."""

    def __init__(
        self,
        docker: DockerDaemon,
        *,
        toolchain: Toolchain,
        nodes: NodeToolchain,
        kind: KindToolchain,
        pause: ImageTarball,
        coredns: ImageTarball,
        report: Report,
    ) -> None:
        self.docker = docker
        self.toolchain = toolchain
        self.nodes = nodes
        self.kind = kind
        self.pause = pause
        self.coredns = coredns
        self.report = report
        self.key = node_image_key(pause, coredns)
        self.ref = f"{NODE_IMAGE}:{KUBERNETES_VERSION}-{self.key}"

    def _labelled(self, repo: str, key: str) -> bool:
        found = self.docker.run("images", "-q", "--filter", f"label={KEY_LABEL}={key}", repo)
        return bool(found.strip())

    def ensure(self) -> str:
        """The node image's reference, built first if missing."""
        if self._labelled(NODE_IMAGE, self.key):
            return self.ref
        self.report(f"building the kind node image {self.ref} (minutes, once per pin)")
        base = self._ensure_base()
        images = self._component_images(base)
        self._assemble(base, images)
        # Earlier node images (other pins) and the component images: only the node stays.
        for ref in images:
            self.docker.run("rmi", "--force", ref)
        for line in self.docker.run("images", "--format", "{{.Repository}}:{{.Tag}}").split():
            if line.startswith(f"{NODE_IMAGE}:") and line != self.ref:
                self.docker.run("rmi", "--force", line)
        self.docker.run("image", "prune", "--force")
        return self.ref

    def _ensure_base(self) -> str:
        key = base_key()
        ref = f"{BASE_IMAGE}:{key}"
        if self._labelled(BASE_IMAGE, key):
            return ref
        rootfs = images_dir() / f"kind-base-rootfs-{key}.tar"
        if not rootfs.is_file():
            self.report(f"making the kind node base: Debian {DEBIAN_SUITE} (mmdebstrap)")
            partial = rootfs.with_name(f"kind-base-rootfs-{key}.partial.tar")
            hooks = [f"--customize-hook={h}" for h in base_rootfs_hooks(self.kind.kind_module)]
            _run(
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    "--quiet",
                    f"--include={','.join(NODE_PACKAGES)}",
                    *hooks,
                    DEBIAN_SUITE,
                    str(partial),
                    _debian_mirror(),
                ],
                "mmdebstrap (kind node base)",
            )
            partial.replace(rootfs)
            for old in images_dir().glob("kind-base-rootfs-*.tar"):
                if old != rootfs:
                    old.unlink(missing_ok=True)
        self.docker.run(
            "import",
            "--change",
            "ENV container=docker",
            "--change",
            f"LABEL {KEY_LABEL}={key}",
            str(rootfs),
            ref,
        )
        return ref

    def _build(self, ref: str, lines: Sequence[str], files: dict[str, Path]) -> None:
        with tempfile.TemporaryDirectory(prefix="modelcache-kind-") as tmp:
            context = Path(tmp)
            for name, source in files.items():
                (context / name).write_bytes(source.read_bytes())
                (context / name).chmod(0o755)
            (context / "Dockerfile").write_text("\n".join(lines) + "\n")
            self.docker.run("build", "--quiet", "-t", ref, str(context))

    def _component_images(self, base: str) -> list[str]:
        """Every image kubeadm lists for the release, made here; returns their refs."""
        listed = self.docker.run(
            "run",
            "--rm",
            "--entrypoint=/kubeadm",
            "-v",
            f"{self.kind.kubeadm}:/kubeadm:ro",
            base,
            "config",
            "images",
            "list",
            f"--kubernetes-version={KUBERNETES_VERSION}",
        ).split()
        binaries = {
            "kube-apiserver": self.toolchain.kube_apiserver,
            "kube-controller-manager": self.nodes.kube_controller_manager,
            "kube-scheduler": self.nodes.kube_scheduler,
            "kube-proxy": self.nodes.kube_proxy,
            "etcd": self.toolchain.etcd,
        }
        self.docker.run("load", "-i", str(self.pause.tarball))
        self.docker.run("load", "-i", str(self.coredns.tarball))
        refs = sorted(set(listed) | set(EXTRA_IMAGES))
        for ref in refs:
            source = image_source(ref)
            self.report(f"node image: {ref} ({source})")
            kind, _, binary = source.partition(":")
            if kind in ("scratch", "base"):
                start = "FROM scratch" if kind == "scratch" else f"FROM {base}"
                lines = [start, f"COPY {binary} /usr/local/bin/{binary}"]
                lines.append(f'ENTRYPOINT ["/usr/local/bin/{binary}"]')
                self._build(ref, lines, {binary: binaries[binary]})
            else:
                self.docker.run("tag", PAUSE_IMAGE if kind == "pause" else COREDNS_IMAGE, ref)
        return refs

    def _assemble(self, base: str, images: Sequence[str]) -> None:
        """kind's buildimage(): binaries in, images into containerd, commit."""
        cid = self.docker.run(
            "run",
            "-d",
            "--entrypoint=sleep",
            "--security-opt",
            "seccomp=unconfined",
            base,
            "infinity",
        ).strip()
        try:
            for name, path in (
                ("kubeadm", self.kind.kubeadm),
                ("kubelet", self.nodes.kubelet),
                ("kubectl", self.toolchain.kubectl),
            ):
                self.docker.run("cp", "-L", str(path), f"{cid}:/usr/bin/{name}")
            self.docker.run(
                "exec",
                cid,
                "sh",
                "-c",
                "chmod 755 /usr/bin/kube*; "
                f"echo {KUBERNETES_VERSION} > /kind/version; mkdir -p /kind/manifests; "
                "(containerd > /var/log/build-containerd.log 2>&1 &); "
                "for i in $(seq 100); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; "
                "done; exit 1",
            )
            for ref in images:
                self._import(cid, ref)
            self.docker.run(
                "exec",
                cid,
                "sh",
                "-c",
                # `sleep` is PID 1 and reaps nothing: wait until containerd is a zombie.
                "pkill containerd; while ps -o stat= -C containerd | grep -qv Z; do sleep 0.2; "
                "done; "
                "rm -f /var/log/build-containerd.log",
            )
            committed = f"{NODE_IMAGE}-commit:{self.key}"
            self.docker.run(
                "commit",
                "--change",
                'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
                cid,
                committed,
            )
        finally:
            self.docker.run("rm", "--force", cid)
        # `docker commit` and `import` take no STOPSIGNAL: one more layer-less build.
        self._build(
            self.ref,
            [f"FROM {committed}", "STOPSIGNAL SIGRTMIN+3", f"LABEL {KEY_LABEL}={self.key}"],
            {},
        )
        self.docker.run("rmi", committed)

    def _import(self, cid: str, ref: str) -> None:
        env = self.docker.env
        save = subprocess.Popen(["docker", "save", ref], env=env, stdout=subprocess.PIPE)
        result = subprocess.run(
            [
                "docker",
                "exec",
                "-i",
                cid,
                "ctr",
                "-n",
                "k8s.io",
                "images",
                "import",
                "--label=io.cri-containerd.pinned=pinned",
                "--all-platforms",
                "--no-unpack",
                "--digests",
                "-",
            ],
            env=env,
            stdin=save.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        if save.stdout is not None:
            save.stdout.close()
        if save.wait() != 0 or result.returncode != 0:
            raise ImageBuildError(f"importing {ref} into the node image: {result.stderr.strip()}")
