"""Version trees: build one in a hidden staging dir, publish it with one rename, read it back.

A directory named `versions/<v>` is complete by construction: it only ever appears
through the rename of a staging dir whose files are all hard links to verified blobs
and whose manifest.json was written and synced last.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from modelcache.api.manifest import MANIFEST_MAX_BYTES, MANIFEST_NAME, Manifest, ManifestFile
from modelcache.api.names import ModelRef
from modelcache.fs import FileRefused, fsync_dir, read_capped, remove_tree
from modelcache.problems import one_line
from modelcache.store import blobs
from modelcache.store.errors import StoreError, VersionNotInstalled
from modelcache.store.layout import Layout, is_version_name
from modelcache.store.links import Linker


@dataclass(frozen=True)
class InstalledVersion:
    """A complete version on this node. `size` is the logical size (sum of its files)."""

    version: str
    installed_at: dt.datetime
    size: int
    files: int
    manifest: Manifest
    path: Path


def read_manifest(layout: Layout, model: ModelRef, version: str) -> Manifest:
    path = layout.manifest_path(model, version)
    try:
        data = read_capped(path, MANIFEST_MAX_BYTES, what="manifest")
    except (FileNotFoundError, NotADirectoryError):
        raise VersionNotInstalled(f"{model}: version {version!r} is not installed") from None
    except FileRefused as error:
        raise StoreError(f"{model}: version {version!r}: {error}") from None
    try:
        return Manifest.from_json(data)
    except ValueError as error:
        raise StoreError(
            f"{model}: version {version!r}: unreadable {path}: {one_line(error)}"
        ) from None


def is_installed(layout: Layout, model: ModelRef, version: str) -> bool:
    return layout.manifest_path(model, version).is_file()


def installed_ns(layout: Layout, model: ModelRef, version: str) -> int:
    """When a version was installed: its manifest.json's mtime, set by `build`."""
    return os.stat(layout.manifest_path(model, version)).st_mtime_ns


def version_names(layout: Layout, model: ModelRef) -> Iterator[str]:
    """Installed versions, in no order; staging and deleting dirs (dot names) are skipped."""
    try:
        entries = list(os.scandir(layout.versions_dir(model)))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if is_version_name(entry.name) and is_installed(layout, model, entry.name):
            yield entry.name


def list_installed(layout: Layout, model: ModelRef) -> list[InstalledVersion]:
    """Oldest first (installation time, then name); a version deleted meanwhile is skipped."""
    found: list[tuple[int, InstalledVersion]] = []
    for name in version_names(layout, model):
        try:
            stamp = installed_ns(layout, model, name)
            manifest = read_manifest(layout, model, name)
        except (FileNotFoundError, VersionNotInstalled):
            continue
        installed = InstalledVersion(
            version=name,
            installed_at=dt.datetime.fromtimestamp(stamp / 1e9, tz=dt.UTC),
            size=manifest.total_size,
            files=len(manifest.files),
            manifest=manifest,
            path=layout.version_dir(model, name),
        )
        found.append((stamp, installed))
    found.sort(key=lambda item: (item[0], item[1].version))
    return [installed for _, installed in found]


def next_install_ns(layout: Layout, model: ModelRef, now_ns: int) -> int:
    """Strictly after every installed version, so "oldest" is well defined even within one
    clock tick (the caller holds the model lock)."""
    latest = max((installed_ns(layout, model, v) for v in version_names(layout, model)), default=0)
    return max(now_ns, latest + 1)


def build(
    layout: Layout, model: ModelRef, manifest: Manifest, stamp_ns: int, linker: Linker
) -> Path:
    """Hard-link every file into a fresh staging dir, write the manifest, sync it all.
    Linear in the manifest: each directory is made once, each file linked once."""
    staging = layout.staging_dir(model, manifest.version)
    staging.mkdir(parents=True)
    try:
        directories = directories_of(f.path for f in manifest.files)
        for directory in directories:  # parents sort before their children
            (staging / directory).mkdir()
        for entry in manifest.files:
            try:
                linker.link(entry.sha256, staging / entry.path)
            except FileNotFoundError:
                raise _missing(model, manifest.version, entry, layout) from None
        manifest_path = staging / MANIFEST_NAME
        with manifest_path.open("wb") as handle:
            handle.write(manifest.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.utime(manifest_path, ns=(stamp_ns, stamp_ns))
        for directory in reversed(directories):  # children before their parents
            fsync_dir(staging / directory)
        fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def directories_of(paths: Iterable[str]) -> list[str]:
    """Every directory that holds one of `paths` (relative, '/'-separated), sorted: a
    parent before its children. A path's parents are walked up only until one is known."""
    found: set[str] = set()
    for path in paths:
        parent = path.rpartition("/")[0]
        while parent and parent not in found:
            found.add(parent)
            parent = parent.rpartition("/")[0]
    return sorted(found)


def publish(staging: Path, final: Path) -> None:
    """The one step that makes a version visible."""
    try:
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(final.parent)


def _missing(model: ModelRef, version: str, entry: ManifestFile, layout: Layout) -> StoreError:
    return StoreError(
        f"{model}: cannot install version {version!r}: blob for {entry.path!r} "
        f"(sha256 {entry.sha256}) is missing from {layout.blob_path(entry.sha256)}"
    )


def check_blobs(layout: Layout, model: ModelRef, manifest: Manifest) -> None:
    """Every file's blob must be there with the manifest's size before anything is linked
    (one stat per distinct blob, however many files share it)."""
    for entry in {f.sha256: f for f in manifest.files}.values():
        path = layout.blob_path(entry.sha256)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise _missing(model, manifest.version, entry, layout) from None
        if size != entry.size:
            raise StoreError(
                f"{model}: cannot install version {manifest.version!r}: blob {path} for "
                f"{entry.path!r} has {size} bytes, the manifest says {entry.size}"
            )


def incomplete_files(version_dir: Path, manifest: Manifest) -> list[ManifestFile]:
    """Files missing from an installed tree or of the wrong size (cheap: stat only)."""
    bad: list[ManifestFile] = []
    for entry in manifest.files:
        try:
            if (version_dir / entry.path).stat().st_size != entry.size:
                bad.append(entry)
        except (FileNotFoundError, NotADirectoryError):
            bad.append(entry)
    return bad


def relink_files(
    layout: Layout, version_dir: Path, entries: list[ManifestFile], linker: Linker
) -> int:
    """Point each file at its blob (or a copy of it) again, one atomic rename per file;
    returns files changed."""
    changed = 0
    touched: set[Path] = set()
    good: dict[str, set[tuple[int, int]]] = {}
    for entry in entries:
        dest = version_dir / entry.path
        if entry.sha256 not in good:
            good[entry.sha256] = blobs.inodes(layout, entry.sha256)
        if _inode(dest) in good[entry.sha256]:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        linker.link(entry.sha256, dest, replace=True)
        touched.add(dest.parent)
        changed += 1
    for directory in touched:
        fsync_dir(directory)
    return changed


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.st_dev, stat.st_ino


def remove(layout: Layout, model: ModelRef, version: str) -> None:
    remove_tree(layout.version_dir(model, version))
