"""A small REST client for the few Kubernetes API calls the agent makes.

The agent GETs a Secret, LISTs the pods on its node, LISTs and WATCHes its own
NodeCache and merge-patches the NodeCache's status subresource. The official
`kubernetes` package cost an idle agent ~27 MB of RSS for that (107 -> 80 MB,
docs/benchmarks.md "Rollback"), so the agent talks to the API server over
urllib3 (TLS, pooling, retries) and reads kubeconfig files with PyYAML. The
operator keeps the `kubernetes` package.

Configuration comes from the pod's service account (`in_cluster_config`: the
token file is re-read every minute, as client-go does, because projected tokens
rotate) or from kubeconfig files (`load_kubeconfig`). Modules: config (where the
server is, how to authenticate), client (the verbs), paths (URLs), watch (the
event stream), errors.
"""

from modelcache.agent.kube.client import KubeClient
from modelcache.agent.kube.config import (
    ClusterConfig,
    default_kubeconfig_paths,
    in_cluster_config,
    load_kubeconfig,
)
from modelcache.agent.kube.errors import ApiError, KubeconfigError
from modelcache.agent.kube.paths import core_path, custom_objects_path
from modelcache.agent.kube.watch import WatchEvent, iter_lines

__all__ = [
    "ApiError",
    "ClusterConfig",
    "KubeClient",
    "KubeconfigError",
    "WatchEvent",
    "core_path",
    "custom_objects_path",
    "default_kubeconfig_paths",
    "in_cluster_config",
    "iter_lines",
    "load_kubeconfig",
]
