"""The version directory a reload names: its manifest, its adapter file, its settings.

The agent sends the path it flipped (`.../current`, or a `versions/<v>` dir). This
module resolves it once (so a flip during the swap cannot mix two versions), checks it
lies under the allowed root, reads `manifest.json` and insists it is the version the
call asked for, and checks the adapter file's size and the settings file's sha256
against the manifest. The adapter's own sha256 is checked while it is staged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from modelcache.api.manifest import MANIFEST_NAME, Manifest, ManifestFile
from modelcache.runtime.errors import SwapRefused
from modelcache.sources.checksum import StreamHasher

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class VersionFiles:
    directory: Path  # resolved: versions/<v>, never the `current` link
    manifest: Manifest
    adapter: Path
    adapter_entry: ManifestFile
    config: bytes | None  # the verified adapter_config.json, when the version has one


def open_version(
    path: Path,
    *,
    version: str,
    adapter_file: str | None = None,
    config_file: str = ADAPTER_CONFIG,
    root: Path | None = None,
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
    try:
        return Manifest.from_json(where.read_bytes())
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
