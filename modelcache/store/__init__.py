"""L2 store: content-addressed blobs, versioned hard-link trees, atomic `current` flip, GC.

Guarantees (each tested in tests/unit/store): a version dir appears only by renaming a
complete, synced staging dir; `current`/`previous` always name installed, complete
versions and are swapped by rename; the live, rollback and pinned versions are never
deleted; gc only deletes blobs no version links (link count 1) and no fresh adoption
holds; any number of files share one blob, past the filesystem's hard-link limit, by
verified copies of it; the disk is the only state, so a new `Store` over a root after a
crash clears leftovers (staging dirs, `current.tmp`, half-written blob copies) and reads
back the same state.

What it offers (`__all__`): `Store`, the facade every caller uses; `Layout`, where each
file lives under a root (what a reader of the disk, such as the runtime, needs); the
types its methods return and the errors they raise. Module map, behind the facade:
layout (paths), locks, blobs, links, trees (version trees), pointers (`current`,
`previous`), pins, space, gc, recovery, warm; durable writes come from `modelcache.fs`.
"""

from modelcache.api.names import ModelRef
from modelcache.store.errors import DiskFull, ProtectedVersion, StoreError, VersionNotInstalled
from modelcache.store.gc import GcResult
from modelcache.store.layout import Layout
from modelcache.store.space import Usage
from modelcache.store.store import Store
from modelcache.store.trees import InstalledVersion

__all__ = [
    "DiskFull",
    "GcResult",
    "InstalledVersion",
    "Layout",
    "ModelRef",
    "ProtectedVersion",
    "Store",
    "StoreError",
    "Usage",
    "VersionNotInstalled",
]
