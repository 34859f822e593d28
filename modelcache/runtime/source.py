"""The version directory a reload loads: its manifest, its adapter file, its settings.

A reload call is a nudge, never an instruction: the pod reads which version is live from
the node's `current` link on its read-only mount (`current_directory`), the disk only
the agent writes. This module resolves that once (so a flip during the swap cannot mix
two versions), keeps it under the root, reads `manifest.json` and insists it is that
version, and checks the adapter file's size and the settings file's sha256 against the
manifest; every file it reads must be a regular file (no symlink, no FIFO or device).
The adapter's own sha256 is checked while it is staged.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from modelcache.api import (
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    InvalidName,
    Manifest,
    ManifestFile,
    ModelRef,
)
from modelcache.fs import FileRefused, StreamHasher, read_capped
from modelcache.problems import one_line
from modelcache.runtime.errors import RefusalKind, SwapRefused
from modelcache.store import Layout, pointers

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class VersionFiles:
    directory: Path  # resolved: versions/<v>, never the `current` link
    manifest: Manifest
    adapter: Path
    adapter_entry: ManifestFile
    config: bytes | None  # the verified adapter_config.json, when the version has one


def current_directory(root: str | os.PathLike[str], model: str) -> tuple[str, Path]:
    """The version the node's `current` link names for `model`, and its directory under
    `root`: the only thing a reload may load. SwapRefused when there is none or the link
    is not the store's own `versions/<version>`."""
    try:
        ref = ModelRef.parse(model)
    except (InvalidName, ValueError) as error:
        raise SwapRefused("current", f"model {model!r}: {error}") from None
    layout = Layout(Path(root))
    link = layout.current_link(ref)
    version = pointers.read(link)  # the store's own reader: versions/<a valid version>, or None
    if version is None:
        if not os.path.lexists(link):
            raise SwapRefused("current", f"{link} does not exist: no version is live yet")
        raise SwapRefused("current", f"{link} is not the store's link to versions/<version>")
    directory = layout.version_dir(ref, version)
    try:
        mode = os.lstat(directory).st_mode
    except OSError as error:
        raise SwapRefused("current", f"{directory}: {error.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise SwapRefused("current", f"{directory} is not a directory (a symlink?)")
    return version, directory


def _regular(path: Path, directory: Path, kind: RefusalKind = "file") -> None:
    """Only regular files inside the version are read: a symlink (of the file or of a
    directory on its way) could point anywhere, a FIFO would hang the read."""
    try:
        mode = os.lstat(path).st_mode
        inside = Path(os.path.realpath(path, strict=True)).is_relative_to(directory)
    except OSError as error:
        raise SwapRefused(kind, f"cannot read {path}: {error.strerror}") from None
    if not stat.S_ISREG(mode) or not inside:
        raise SwapRefused(kind, f"{path} is not a regular file of {directory}")


def open_version(
    path: str | os.PathLike[str],
    *,
    version: str,
    adapter_file: str | None = None,
    config_file: str = ADAPTER_CONFIG,
    root: str | os.PathLike[str] | None = None,
) -> VersionFiles:
    """Resolve and check a version directory; raises SwapRefused naming what is wrong."""
    try:
        directory = Path(os.path.realpath(path, strict=True))
    except OSError as error:
        raise SwapRefused("path", f"{path} does not exist ({error.strerror})") from None
    if root is not None and not directory.is_relative_to(Path(os.path.realpath(root))):
        raise SwapRefused("path", f"{path} resolves to {directory}, outside {root}")
    if not directory.is_dir():
        raise SwapRefused("path", f"{path} is not a directory")
    manifest = _manifest(directory)
    if manifest.version != version:
        raise SwapRefused(
            "manifest",
            f"{path} holds version {manifest.version!r}, not {version!r} "
            "(was `current` flipped again?)",
        )
    entry = _adapter_entry(manifest, directory, adapter_file)
    adapter = directory / entry.path
    _regular(adapter, directory)
    try:
        size = adapter.stat().st_size
    except OSError as error:
        raise SwapRefused("file", f"{adapter} is listed but unreadable: {error.strerror}") from None
    if size != entry.size:
        raise SwapRefused("file", f"{adapter} is {size} bytes; the manifest says {entry.size}")
    return VersionFiles(
        directory, manifest, adapter, entry, _config(manifest, directory, config_file)
    )


def _manifest(directory: Path) -> Manifest:
    where = directory / MANIFEST_NAME
    _regular(where, directory, "manifest")
    try:
        return Manifest.from_json(read_capped(where, MANIFEST_MAX_BYTES, what="manifest"))
    except FileRefused as error:
        raise SwapRefused("manifest", one_line(error)) from None
    except OSError as error:
        raise SwapRefused("manifest", f"cannot read {where}: {error.strerror}") from None
    except ValidationError as error:
        raise SwapRefused("manifest", f"{where} is invalid: {error.errors()[0]['msg']}") from None


def _adapter_entry(manifest: Manifest, directory: Path, adapter_file: str | None) -> ManifestFile:
    if adapter_file is not None:
        try:
            return manifest.file(adapter_file)
        except KeyError:
            raise SwapRefused(
                "file", f"{directory}: the manifest lists no {adapter_file!r}"
            ) from None
    weights = [f for f in manifest.files if f.path.endswith(".safetensors")]
    if len(weights) != 1:
        names = [f.path for f in weights]
        raise SwapRefused(
            "file",
            f"{directory}: expected exactly one .safetensors file, the manifest lists {names}; "
            "configure adapter_file",
        )
    return weights[0]


def _config(manifest: Manifest, directory: Path, config_file: str) -> bytes | None:
    try:
        entry = manifest.file(config_file)
    except KeyError:
        return None
    where = directory / entry.path
    _regular(where, directory)
    try:
        data = where.read_bytes()
    except OSError as error:
        raise SwapRefused("file", f"cannot read {where}: {error.strerror}") from None
    hasher = StreamHasher()  # hash the very bytes that will be parsed
    hasher.update(data)
    digest = hasher.digest()
    if digest.sha256 != entry.sha256 or len(data) != entry.size:
        raise SwapRefused(
            "checksum",
            f"{where}: sha256 {digest.sha256} does not match the manifest's {entry.sha256}",
        )
    return data
