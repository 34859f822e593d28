"""Version files as hard links to blobs, within the filesystem's limit on links per inode.

ext4 allows 65,000 links to one inode, and many files may legitimately share one blob
(empty files across every version of every model). When linking to a blob fails with
EMLINK (or the blob has `link_limit` links), the file is linked to the blob's first
copy, `<digest>.1`, made on demand beside it (see `blobs.make_copy`: verified, and
renamed into blobs/ only when complete), then to `<digest>.2`, and so on. A copy is
made and given its first link under the blob's lock, so gc, which only takes a blob
or a copy with one link and only under that lock, never sees it unused.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from modelcache.fs import link_atomic
from modelcache.store import blobs, locks
from modelcache.store.errors import StoreError
from modelcache.store.layout import Layout


class Linker:
    """Links files to blobs for one install or relink; remembers which copy of each blob
    takes links now, so 100,000 files sharing a blob cost one failed link per copy."""

    def __init__(self, layout: Layout, link_limit: int | None = None) -> None:
        if link_limit is not None and link_limit < 2:
            raise ValueError(f"link_limit must be >= 2, got {link_limit}")
        self.layout = layout
        self.link_limit = link_limit
        self._copy: dict[str, int] = {}  # digest -> number of the copy taking links (0: blob)

    def link(self, sha256: str, dest: Path, *, replace: bool = False) -> Path:
        """Make `dest` a hard link to the blob or one of its copies; returns which.
        `replace`: swap an existing `dest` in one rename (a repair), else `dest` is new."""
        number = self._copy.get(sha256, 0)
        while True:
            target = self.layout.blob_path(sha256, number)
            try:
                if number > 0 and not target.exists():
                    self._link_new_copy(sha256, target, dest, replace)
                else:
                    self._link(target, dest, replace)
            except OSError as error:
                if error.errno != errno.EMLINK:
                    raise
                number += 1
                continue
            self._copy[sha256] = number
            return target

    def _link_new_copy(self, sha256: str, copy: Path, dest: Path, replace: bool) -> None:
        with locks.hold(self.layout.blob_lock(sha256)):
            made = not copy.exists()
            if made:
                blobs.make_copy(self.layout, sha256, copy)
            try:
                self._link(copy, dest, replace)
            except OSError as error:
                if made and error.errno == errno.EMLINK:  # a new inode cannot be full
                    raise StoreError(f"cannot link {dest} to {copy}: {error.strerror}") from None
                raise

    def _link(self, target: Path, dest: Path, replace: bool) -> None:
        if self.link_limit is not None and os.stat(target).st_nlink >= self.link_limit:
            raise OSError(errno.EMLINK, os.strerror(errno.EMLINK), str(target))
        if replace:
            link_atomic(target, dest)
        else:
            os.link(target, dest)
