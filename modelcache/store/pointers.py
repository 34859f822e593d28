"""`current` and `previous`: relative symlinks `versions/<v>`, swapped with one rename."""

from __future__ import annotations

import os
from pathlib import Path

from modelcache.fs import fsync_dir, symlink_atomic
from modelcache.store.layout import VERSIONS, is_version_name


def read(link: Path) -> str | None:
    """The version a link names, or None if there is no link or it is not one of ours."""
    try:
        target = os.readlink(link)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return None
    head, _, version = target.partition("/")
    if head != VERSIONS or not is_version_name(version):
        return None
    return version


def point(link: Path, version: str) -> None:
    symlink_atomic(link, f"{VERSIONS}/{version}")


def clear(link: Path) -> None:
    try:
        link.unlink()
    except FileNotFoundError:
        return
    fsync_dir(link.parent)
