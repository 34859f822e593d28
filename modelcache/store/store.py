"""`Store`: the L2 cache on one node, as one object over a directory (the disk is the state).

Every method re-reads what it needs from disk, so several Store objects, in one or
many processes, can share a ROOT; writers serialise on inter-process locks (see
`locks`). Building blocks live in their own modules; this facade adds the locking,
the rules (what may be deleted, what may be flipped to) and the error messages.

Repairing a corrupt blob: `quarantine_blob` moves it out of blobs/ (versions keep
their own hard link, so nothing disappears under a running model); download it
again to `tmp_path`, `adopt_blob` it, then `relink` replaces every version file
with that digest by a link to the good blob, one atomic rename per file. gc drops
the quarantined copy once no version links it.

Any number of files may share one blob: past the filesystem's hard-link limit (65,000
on ext4) files are linked to verified copies of the blob (`links`), which gc collects,
and verify and quarantine cover, like the blob itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from modelcache.api.manifest import Manifest
from modelcache.api.names import ModelRef
from modelcache.fs import make_dirs, read_capped, remove_tree, write_atomic
from modelcache.store import blobs, locks, pins, pointers, recovery, space, trees, warm
from modelcache.store.errors import ProtectedVersion, StoreError, VersionNotInstalled
from modelcache.store.gc import GcResult, collect
from modelcache.store.layout import Layout, check_sha256
from modelcache.store.links import Linker

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
SOURCE_MAX_BYTES = 64 * 1024
"""source.json holds one URL (at most a few KiB): anything larger is not ours."""


class Store:
    """A content-addressed, versioned model cache rooted at `root`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        high_watermark: float = 0.95,
        reserve_bytes: int = 0,
        recover: bool = True,
        link_limit: int | None = None,
    ) -> None:
        """`link_limit`: links per blob before a copy takes the next ones; None leaves it to
        the filesystem (EMLINK), a number (>= 2) is for tests and filesystems that lie."""
        if not 0.0 < high_watermark <= 1.0:
            raise ValueError(f"high_watermark must be in (0, 1], got {high_watermark}")
        if reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, got {reserve_bytes}")
        self.root = Path(root).absolute()
        self.high_watermark = high_watermark
        self.reserve_bytes = reserve_bytes
        if link_limit is not None and link_limit < 2:
            raise ValueError(f"link_limit must be >= 2, got {link_limit}")
        self.link_limit = link_limit
        self._layout = Layout(self.root)
        self._layout.make_dirs()
        if recover:
            self.recover()

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> int:
        """Remove crash leftovers of models nobody is working on; returns how many."""
        removed = recovery.clean_deleted_models(self._layout)
        removed += recovery.clean_blob_copies(self._layout)
        for model in self.models():
            with locks.try_hold(self._layout.model_lock(model)) as got:
                if got:
                    removed += recovery.clean_model(self._layout, model)
        return removed

    # -- blobs ------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self._layout.blob_path(sha256)

    def has_blob(self, sha256: str) -> bool:
        return blobs.has_blob(self._layout, sha256)

    def blob_lock(self, sha256: str) -> contextlib.AbstractContextManager[None]:
        """Held while a blob is downloaded and adopted, so concurrent pulls fetch it once."""
        return locks.hold(self._layout.blob_lock(sha256))

    def tmp_path(self, sha256: str) -> Path:
        """A stable name per digest, so a resumed pull finds its partial file."""
        return self._layout.tmp_path(sha256)

    def adopt_blob(self, tmp: Path, sha256: str) -> Path:
        """Take a verified download into blobs/ (the caller verified it)."""
        tmp = Path(tmp)
        with self.blob_lock(sha256):
            if not tmp.is_file() and not self.has_blob(sha256):
                raise StoreError(f"cannot adopt blob {sha256}: {tmp} does not exist")
            return blobs.adopt(self._layout, tmp, sha256)

    def verify_blob(self, sha256: str) -> bool:
        """Rehash the blob and any copies of it (see `links`): all must match."""
        return blobs.verify(self._layout, sha256)

    def quarantine_blob(self, sha256: str) -> None:
        with self.blob_lock(sha256):
            moved = blobs.quarantine(self._layout, sha256)
        if moved is not None:
            log.warning("quarantined corrupt blob %s to %s", sha256, moved)

    def relink(self, sha256: str) -> int:
        """Point every version file with this digest at the (repaired) blob; returns count."""
        check_sha256(sha256)
        if not self.has_blob(sha256):
            raise StoreError(f"cannot relink {sha256}: {self.blob_path(sha256)} is missing")
        count = 0
        linker = self._linker()
        for model in self.models():
            with locks.hold(self._layout.model_lock(model)):
                for installed in trees.list_installed(self._layout, model):
                    entries = [f for f in installed.manifest.files if f.sha256 == sha256]
                    count += trees.relink_files(self._layout, installed.path, entries, linker)
        return count

    def _linker(self) -> Linker:
        return Linker(self._layout, self.link_limit)

    # -- space ------------------------------------------------------------------------------
    def ensure_space(self, needed_bytes: int) -> None:
        space.check_space(
            self.root,
            needed_bytes,
            high_watermark=self.high_watermark,
            reserve_bytes=self.reserve_bytes,
        )

    def usage(self) -> space.Usage:
        stats = space.disk_stats(self.root)
        count = size = 0
        for blob in blobs.iter_blobs(self._layout):  # copies hold bytes, not another blob
            count, size = count + (blob.copy == 0), size + blob.size
        return space.Usage(
            root=self.root,
            total_bytes=stats.total_bytes,
            free_bytes=stats.free_bytes,
            used_bytes=stats.used_bytes,
            blob_bytes=size,
            blob_count=count,
            high_watermark=self.high_watermark,
            reserve_bytes=self.reserve_bytes,
        )

    # -- versions ---------------------------------------------------------------------------
    def install_version(self, model: ModelRef, manifest: Manifest) -> Path:
        """Make `manifest` a complete version; idempotent (a damaged install is re-linked)."""
        layout = self._layout
        final = layout.version_dir(model, manifest.version)
        trees.check_blobs(layout, model, manifest)
        with locks.hold(layout.model_lock(model)), locks.hold(layout.gc_lock):
            if trees.is_installed(layout, model, manifest.version):
                self._repair_installed(model, manifest, final)
            else:
                if final.exists():  # a directory without a manifest is not a version: replace
                    remove_tree(final)
                make_dirs(layout.versions_dir(model))
                stamp = trees.next_install_ns(layout, model, time.time_ns())
                staging = trees.build(layout, model, manifest, stamp, self._linker())
                trees.publish(staging, final)
            for sha256 in {entry.sha256 for entry in manifest.files}:
                blobs.release_hold(layout, sha256)
        return final

    def _repair_installed(self, model: ModelRef, manifest: Manifest, final: Path) -> None:
        existing = trees.read_manifest(self._layout, model, manifest.version)
        if existing.files != manifest.files:
            raise StoreError(
                f"{model}: version {manifest.version!r} is already installed at {final} with "
                "different files; a version is immutable"
            )
        missing = trees.incomplete_files(final, manifest)
        if missing:
            trees.relink_files(self._layout, final, missing, self._linker())
            log.warning("%s: re-linked %d damaged files of %s", model, len(missing), final)

    def has_version(self, model: ModelRef, version: str) -> bool:
        return trees.is_installed(self._layout, model, version)

    def versions(self, model: ModelRef) -> list[trees.InstalledVersion]:
        """Installed versions, oldest first."""
        return trees.list_installed(self._layout, model)

    def manifest(self, model: ModelRef, version: str) -> Manifest:
        return trees.read_manifest(self._layout, model, version)

    def version_path(self, model: ModelRef, version: str) -> Path:
        return self._layout.version_dir(model, version)

    # -- current / previous -----------------------------------------------------------------
    def current(self, model: ModelRef) -> str | None:
        return self._resolved(model, self._layout.current_link(model))

    def previous(self, model: ModelRef) -> str | None:
        return self._resolved(model, self._layout.previous_link(model))

    def _resolved(self, model: ModelRef, link: Path) -> str | None:
        version = pointers.read(link)
        if version is not None and not self.has_version(model, version):
            log.warning("%s: %s points at %s, which is not installed", model, link, version)
            return None
        return version

    def current_path(self, model: ModelRef) -> Path:
        """What an application opens: ROOT/models/<ns>/<name>/current."""
        return self._layout.current_link(model)

    def flip(self, model: ModelRef, version: str) -> str | None:
        """Make `version` live; the old live version becomes `previous`. Returns the old one."""
        with locks.hold(self._layout.model_lock(model)):
            return self._flip_locked(model, version)

    def _flip_locked(self, model: ModelRef, version: str) -> str | None:
        layout = self._layout
        manifest = trees.read_manifest(layout, model, version)
        broken = trees.incomplete_files(layout.version_dir(model, version), manifest)
        if broken:
            raise StoreError(
                f"{model}: refusing to flip to version {version!r}: {len(broken)} files are "
                f"missing or damaged, e.g. {broken[0].path!r}; install it again"
            )
        old = self.current(model)
        if old == version:
            return old
        if old is not None:
            pointers.point(layout.previous_link(model), old)
        pointers.point(layout.current_link(model), version)
        return old

    def rollback(self, model: ModelRef) -> str:
        """Flip to `previous` (which becomes the new previous's counterpart); returns it."""
        with locks.hold(self._layout.model_lock(model)):
            target = self.previous(model)
            if target is None:
                raise StoreError(f"{model}: no previous version to roll back to")
            self._flip_locked(model, target)
            return target

    # -- where a model comes from --------------------------------------------------------------
    def record_source(self, model: ModelRef, url: str) -> None:
        """Remember the model's L3 URL, so `use` and `verify` repairs can reach it later."""
        with locks.hold(self._layout.model_lock(model)):
            make_dirs(self._layout.model_dir(model))
            write_atomic(self._layout.source_file(model), json.dumps({"url": url}).encode())

    def source(self, model: ModelRef) -> str | None:
        try:
            data = json.loads(read_capped(self._layout.source_file(model), SOURCE_MAX_BYTES))
        except (OSError, ValueError):  # FileRefused is an OSError: a FIFO is no source
            return None
        url = data.get("url") if isinstance(data, dict) else None
        return url if isinstance(url, str) else None

    # -- pins -------------------------------------------------------------------------------
    def pins(self, model: ModelRef) -> set[str]:
        return pins.read(self._layout.pins_file(model))

    def pin(self, model: ModelRef, version: str) -> None:
        """Keep `version` through retention until unpinned."""
        with locks.hold(self._layout.model_lock(model)):
            if not self.has_version(model, version):
                raise VersionNotInstalled(f"{model}: cannot pin {version!r}: not installed")
            pinned = self.pins(model)
            if version not in pinned:
                pins.write(self._layout.pins_file(model), pinned | {version})

    def unpin(self, model: ModelRef, version: str) -> None:
        with locks.hold(self._layout.model_lock(model)):
            pinned = self.pins(model)
            if version in pinned:
                pins.write(self._layout.pins_file(model), pinned - {version})

    # -- removal ----------------------------------------------------------------------------
    def _protected(self, model: ModelRef) -> dict[str, str]:
        reasons = {version: "pinned" for version in self.pins(model)}
        for version, reason in ((self.previous(model), "previous"), (self.current(model), "live")):
            if version is not None:
                reasons[version] = reason
        return reasons

    def remove_version(self, model: ModelRef, version: str) -> None:
        """Delete one version; refuses the live one, the rollback target and pinned ones."""
        with locks.hold(self._layout.model_lock(model)):
            reason = self._protected(model).get(version)
            if reason is not None:
                raise ProtectedVersion(f"{model}: refusing to remove version {version!r}: {reason}")
            if not self.has_version(model, version):
                raise VersionNotInstalled(f"{model}: version {version!r} is not installed")
            trees.remove(self._layout, model, version)

    def retain(self, model: ModelRef, keep: int, protect: Iterable[str] = ()) -> list[str]:
        """Remove the oldest versions until at most `keep` remain, skipping the live one,
        the rollback target, pinned and `protect`ed ones (so more may remain). Returns
        the removed versions, oldest first."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        with locks.hold(self._layout.model_lock(model)):
            installed = [v.version for v in self.versions(model)]
            safe = set(self._protected(model)) | set(protect)
            excess = len(installed) - keep
            removed: list[str] = []
            for version in installed:
                if len(removed) >= excess:
                    break
                if version not in safe:
                    trees.remove(self._layout, model, version)
                    removed.append(version)
            return removed

    def remove_model(self, model: ModelRef) -> list[str]:
        """Delete a model entirely (its ModelVersion is gone): links, pins, every version."""
        layout = self._layout
        with locks.hold(layout.model_lock(model)):
            removed = [v.version for v in self.versions(model)]
            pointers.clear(layout.current_link(model))
            pointers.clear(layout.previous_link(model))
            model_dir = layout.model_dir(model)
            if model_dir.exists():
                remove_tree(model_dir)
            with contextlib.suppress(OSError):
                model_dir.parent.rmdir()  # the namespace dir, when it was the last model
            # Unlinked while held: a waiter on the old inode sees st_nlink 0 and retries.
            layout.model_lock(model).unlink(missing_ok=True)
        return removed

    def models(self) -> list[ModelRef]:
        """Every model with a directory under models/ (valid names only)."""
        found: list[ModelRef] = []
        for namespace in _subdirs(self._layout.models_dir):
            for name in _subdirs(self._layout.models_dir / namespace):
                with contextlib.suppress(ValueError):
                    found.append(ModelRef(namespace, name))
        return found

    # -- gc and warm-up ---------------------------------------------------------------------
    def gc(self, *, tmp_max_age: float = DAY, hold_max_age: float | None = None) -> GcResult:
        """Delete unreferenced blobs, partial downloads older than `tmp_max_age` seconds,
        holds of adoptions never installed after `hold_max_age` (default: tmp_max_age)
        and crash leftovers."""
        with locks.hold(self._layout.gc_lock):
            leftovers = self.recover()
            result = collect(
                self._layout,
                tmp_max_age=tmp_max_age,
                hold_max_age=tmp_max_age if hold_max_age is None else hold_max_age,
            )
        return GcResult(**{**result.__dict__, "leftovers_removed": leftovers})

    def warm(
        self, model: ModelRef, version: str, *, progress: Callable[[int], None] | None = None
    ) -> int:
        """Pull a version's files into the page cache; returns bytes read."""
        manifest = self.manifest(model, version)
        directory = self._layout.version_dir(model, version)
        return warm.warm_files((directory / f.path for f in manifest.files), progress)


def _subdirs(path: Path) -> list[str]:
    """Names of real directories in `path`, sorted; a directory removed meanwhile is empty."""
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
