"""L2 store: content-addressed blobs, versioned hard-link trees, atomic `current` flip, GC.

Guarantees (each tested in tests/unit/store): a version dir appears only by renaming a
complete, synced staging dir; `current`/`previous` always name installed, complete
versions and are swapped by rename; the live, rollback and pinned versions are never
deleted; gc only deletes blobs no version links (link count 1) and no fresh adoption
holds; the disk is the only state, so a new `Store` over a root after a crash clears
leftovers (staging dirs, `current.tmp`) and reads back the same state. Module map:
layout (paths), durable (fsync/rename), locks, blobs, versions, pointers, pins,
space, gc, recovery, warm; `store.Store` is the facade.
"""

from modelcache.api.names import ModelRef
from modelcache.store.errors import DiskFull, ProtectedVersion, StoreError, VersionNotInstalled
from modelcache.store.gc import GcResult
from modelcache.store.space import Usage
from modelcache.store.store import Store
from modelcache.store.versions import InstalledVersion

__all__ = [
    "DiskFull",
    "GcResult",
    "InstalledVersion",
    "ModelRef",
    "ProtectedVersion",
    "Store",
    "StoreError",
    "Usage",
    "VersionNotInstalled",
]
