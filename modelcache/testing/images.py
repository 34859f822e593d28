"""The images a real test cluster runs, built here without any registry.

A Debian rootfs made by mmdebstrap stands in as `python:3.11-slim`, so the
project's Dockerfiles build unmodified; the pod sandbox (pause) and CoreDNS are
single static binaries `FROM scratch`. Each image is saved as a tarball in the
cache, named by a hash of everything that went into it: a second run with the
same inputs starts no docker daemon at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from modelcache import __version__
from modelcache.testing.cache import cache_dir
from modelcache.testing.docker import DockerDaemon, DockerError
from modelcache.testing.toolchain import COREDNS_VERSION, NodeToolchain

Report = Callable[[str], None]
REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(__file__).resolve().parent / "assets"

BASE_IMAGE = "python:3.11-slim"  # what the Dockerfiles start FROM
BASE_PACKAGES = ("python3", "python3-pip", "ca-certificates")
DEBIAN_SUITE = "bookworm"  # its python3 is 3.11, as the Dockerfiles expect
PAUSE_IMAGE = "modelcache.local/pause:3.10"
COREDNS_IMAGE = f"modelcache.local/coredns:{COREDNS_VERSION}"
OPERATOR_IMAGE = f"ghcr.io/modelcache/modelcache-operator:{__version__}"
AGENT_IMAGE = f"ghcr.io/modelcache/modelcache-agent:{__version__}"
STUDIO_IMAGE = f"ghcr.io/modelcache/studio:{__version__}"
# Only these travel into a build context (as .dockerignore says for users); the test
# harness stays out, so a change to it rebuilds no image.
CONTEXT_PATHS = ("pyproject.toml", "README.md", "modelcache")
CONTEXT_EXCLUDED = ("modelcache/testing",)


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says which and why."""


@dataclass(frozen=True)
class ImageTarball:
    """A built image: its reference and the `docker save` tarball nodes import."""

    ref: str
    tarball: Path


@dataclass(frozen=True)
class ProjectImage:
    ref: str
    dockerfile: str
    extra_paths: tuple[str, ...] = ()


PROJECT_IMAGES = (
    ProjectImage(OPERATOR_IMAGE, "Dockerfile.operator"),
    ProjectImage(AGENT_IMAGE, "Dockerfile.agent"),
)
# The inference pod of the e2e tests: torch makes it several GB.
STUDIO = ProjectImage(
    STUDIO_IMAGE, "Dockerfile.studio", ("examples/__init__.py", "examples/studio")
)


def images_dir() -> Path:
    return cache_dir() / "images"


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def _tree_files(root: Path, paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for rel in paths:
        top = root / rel
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        files += [
            f
            for f in candidates
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
        ]
    return files


def build_context(root: Path, image: ProjectImage) -> dict[str, bytes]:
    """The files an image is built from, by path, read once: the cache key and the
    context the daemon gets are the same bytes, even while someone edits the tree."""
    paths = (image.dockerfile, *CONTEXT_PATHS, *image.extra_paths)
    context: dict[str, bytes] = {}
    for f in _tree_files(root, paths):
        rel = f.relative_to(root).as_posix()
        if not any(rel == x or rel.startswith(f"{x}/") for x in CONTEXT_EXCLUDED):
            context[rel] = f.read_bytes()
    return context


def context_key(base_key: str, context: dict[str, bytes]) -> str:
    """The tarball's name: a hash of the base image and every context file and path."""
    return _digest(
        [base_key.encode(), *(rel.encode() + b"\0" + data for rel, data in sorted(context.items()))]
    )


def _debian_mirror() -> str:
    """The machine's own Debian mirror (deb822 or one-line sources), for mmdebstrap."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.is_file():
        for line in deb822.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split(":", 1)[1].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == "deb" and not fields[1].startswith("["):
                return fields[1]
    return "http://deb.debian.org/debian"


def _run(argv: Sequence[str], what: str, *, cwd: Path | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ImageBuildError(f"{what} failed:\n{tail}")


class ImageBuilder:
    """Builds what is missing (one docker daemon for all of it) and returns the tarballs."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.dir = images_dir()
        self._docker: DockerDaemon | None = None
        self._built = False

    def _daemon(self) -> DockerDaemon:
        if self._docker is None:
            self.report("starting a private dockerd to build images")
            self._docker = DockerDaemon().start()
        return self._docker

    def close(self) -> None:
        if self._docker is not None:
            if self._built:  # the layers of replaced builds: they would pile up
                with contextlib.suppress(DockerError):
                    self._docker.run("image", "prune", "--force")
            self._docker.stop()
            self._docker = None

    def _tarball(self, ref: str, key: str) -> Path:
        slug = ref.rsplit("/", 1)[-1].replace(":", "-")
        return self.dir / f"{slug}-{key}.tar"

    def _saved(self, ref: str, target: Path) -> ImageTarball:
        """Save a fresh build and drop the tarballs of the image's earlier inputs."""
        assert self._docker is not None
        self._docker.save(ref, target)
        slug = target.name.rsplit("-", 1)[0]
        for old in self.dir.glob(f"{slug}-*.tar"):
            if old != target:
                old.unlink(missing_ok=True)
        self._built = True
        return ImageTarball(ref, target)

    # --- the base: a Debian rootfs standing in for python:3.11-slim --------------------
    def base_key(self) -> str:
        return _digest([DEBIAN_SUITE.encode(), *(p.encode() for p in BASE_PACKAGES), b"v1"])

    def _ensure_base_loaded(self) -> None:
        docker = self._daemon()
        key = self.base_key()
        label = f"modelcache.base={key}"
        found = docker.run("images", "-q", "--filter", f"label={label}", BASE_IMAGE).strip()
        if found:
            return
        rootfs = self.dir / f"base-rootfs-{key}.tar"
        if not rootfs.is_file():
            self.report(f"making the base rootfs: Debian {DEBIAN_SUITE} + python3 (mmdebstrap)")
            partial = rootfs.with_name(f"base-rootfs-{key}.partial.tar")  # mmdebstrap: .tar
            ca = "/etc/ssl/certs/ca-certificates.crt"
            _run(
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    "--quiet",
                    f"--include={','.join(BASE_PACKAGES)}",
                    # The machine's CA bundle, so pip in a build trusts what the host trusts.
                    f'--customize-hook=cp {ca} "$1{ca}"',
                    '--customize-hook=printf "[global]\\nbreak-system-packages = true\\n'
                    'cert = /etc/ssl/certs/ca-certificates.crt\\nno-cache-dir = true\\n" '
                    '> "$1/etc/pip.conf"',
                    '--customize-hook=ln -sf python3 "$1/usr/bin/python"',
                    '--customize-hook=rm -rf "$1"/var/cache/apt/archives/*.deb '
                    '"$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/*',
                    DEBIAN_SUITE,
                    str(partial),
                    _debian_mirror(),
                ],
                "mmdebstrap",
            )
            partial.replace(rootfs)
        self.report(f"importing the base as {BASE_IMAGE}")
        docker.run(
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            f"LABEL {label}",
            "--change",
            'CMD ["python3"]',
            str(rootfs),
            BASE_IMAGE,
        )

    # --- images FROM scratch ------------------------------------------------------------
    def _scratch_image(self, ref: str, binary: Path, name: str, user: str | None) -> ImageTarball:
        key = _digest([binary.read_bytes(), (user or "").encode(), b"v1"])
        target = self._tarball(ref, key)
        if not target.is_file():
            self.report(f"building {ref}")
            with tempfile.TemporaryDirectory(prefix="modelcache-img-") as tmp:
                context = Path(tmp)
                shutil.copy2(binary, context / name)
                lines = ["FROM scratch", f"COPY {name} /{name}"]
                if user:
                    lines.append(f"USER {user}")
                lines.append(f'ENTRYPOINT ["/{name}"]')
                (context / "Dockerfile").write_text("\n".join(lines) + "\n")
                self._daemon().run("build", "--quiet", "-t", ref, str(context))
                return self._saved(ref, target)
        return ImageTarball(ref, target)

    def pause(self) -> ImageTarball:
        built = self.dir / "pause-bin"
        source = ASSETS / "pause.c"
        key = _digest([source.read_bytes()])
        binary = self.dir / f"pause-{key}"
        if not binary.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            _run(["gcc", "-static", "-Os", "-s", "-o", str(built), str(source)], "gcc pause.c")
            built.replace(binary)
        return self._scratch_image(PAUSE_IMAGE, binary, "pause", "65535:65535")

    def coredns(self, nodes: NodeToolchain) -> ImageTarball:
        return self._scratch_image(COREDNS_IMAGE, nodes.coredns, "coredns", None)

    # --- the project's images, from its own Dockerfiles -----------------------------------
    def project(self, image: ProjectImage) -> ImageTarball:
        context = build_context(REPO, image)
        target = self._tarball(image.ref, context_key(self.base_key(), context))
        if target.is_file():
            return ImageTarball(image.ref, target)
        self._ensure_base_loaded()
        self.report(f"building {image.ref} from {image.dockerfile}")
        with tempfile.TemporaryDirectory(prefix="modelcache-ctx-") as tmp:
            context_dir = Path(tmp)
            for rel, data in context.items():
                dest = context_dir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            docker = self._daemon()
            docker.run(
                "build",
                "--network=host",
                "--quiet",
                "-f",
                str(context_dir / image.dockerfile),
                "-t",
                image.ref,
                str(context_dir),
            )
            return self._saved(image.ref, target)


def ensure_images(
    nodes: NodeToolchain, report: Report, *, studio: bool = True
) -> list[ImageTarball]:
    """Every image the cluster's nodes need, built once per input and cached."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with FileLock(str(images_dir() / "build.lock")):
        builder = ImageBuilder(report)
        try:
            built = [builder.pause(), builder.coredns(nodes)]
            built += [builder.project(image) for image in PROJECT_IMAGES]
            if studio:
                built.append(builder.project(STUDIO))
        finally:
            builder.close()
    return built
