"""Launchers for the real services modelcache is tested against.

Usable from pytest fixtures, from `modelcache dev up`, from the demo and from
benchmarks: a kube-apiserver + etcd built from source at pinned versions, and a
SeaweedFS S3 server. Everything binds to loopback and is stopped by PID.
"""

from modelcache.testing.cache import cache_dir
from modelcache.testing.kube import KubeControlPlane
from modelcache.testing.objectstore import ObjectStore
from modelcache.testing.toolchain import Toolchain, ensure_toolchain

__all__ = ["KubeControlPlane", "ObjectStore", "Toolchain", "cache_dir", "ensure_toolchain"]
