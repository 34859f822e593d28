"""modelcache: model files cached across GPU nodes in three tiers (object store, NVMe, GPU)."""

__version__ = "0.1.0"
