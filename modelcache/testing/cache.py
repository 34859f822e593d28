"""Where the test toolchain is cached, so a second run reuses what the first built."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$MODELCACHE_CACHE_DIR`, else `$XDG_CACHE_HOME/modelcache`, else `~/.cache/modelcache`."""
    explicit = os.environ.get("MODELCACHE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "modelcache"
