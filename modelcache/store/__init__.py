"""L2 store: content-addressed blobs, versioned hard-link trees, atomic `current` flip, GC."""
