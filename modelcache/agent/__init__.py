"""The node daemon: desired state -> store -> flip -> reload; metrics and the cache event log.

What it offers (`__all__`): the process `modelcache agent` runs (`run_standalone`,
`run_kubernetes`, `AgentProcess`), the two modes' agents, the engine every mode and the CLI
drive, the policy they share (`NodeReconciler`), the event log and its events, the
standalone config, the reload call, the metrics and the scrubber. The agent's own
Kubernetes client is `modelcache.agent.kube`. Needs the `[agent]` extra.

Module map: daemon (one process, both modes), process (event log, metrics server, scrubber,
shutdown order), standalone and kubeagent (the modes), kubewatch (NodeCache in, status
out), reconciler (the policy), engine (L3 -> L2 -> flip), events, reload, scrubber,
metrics, config (node.yaml), kube (the REST client).
"""

from modelcache.agent.config import (
    AgentConfig,
    ConfigError,
    ModelConfig,
    PullConfig,
    VerifyConfig,
    load_config,
    parse_config,
    read_config,
)
from modelcache.agent.daemon import PeerSettings, run_kubernetes, run_standalone, stop_on_signals
from modelcache.agent.engine import CacheEngine, PullProgress, PullResult, VerifyReport
from modelcache.agent.events import (
    AlreadyCached,
    Collected,
    ConfigLoaded,
    EventLog,
    Evicted,
    Failed,
    FileFetched,
    Flipped,
    Installed,
    ModelRemoved,
    Pinned,
    PullEnded,
    PullStarted,
    Repaired,
    ResumeDiscarded,
    Unpinned,
    VerifyFailed,
    Warmed,
    read_events,
)
from modelcache.agent.kubeagent import KubeAgent
from modelcache.agent.metrics import AgentMetrics
from modelcache.agent.process import AgentProcess, Verification
from modelcache.agent.reconciler import DesiredModel, NodeReconciler, ReloadEndpoint, is_permanent
from modelcache.agent.reload import call_reload
from modelcache.agent.scrubber import Scrubber
from modelcache.agent.standalone import StandaloneAgent

__all__ = [
    "AgentConfig",
    "AgentMetrics",
    "AgentProcess",
    "AlreadyCached",
    "CacheEngine",
    "Collected",
    "ConfigError",
    "ConfigLoaded",
    "DesiredModel",
    "EventLog",
    "Evicted",
    "Failed",
    "FileFetched",
    "Flipped",
    "Installed",
    "KubeAgent",
    "ModelConfig",
    "ModelRemoved",
    "NodeReconciler",
    "PeerSettings",
    "Pinned",
    "PullConfig",
    "PullEnded",
    "PullProgress",
    "PullResult",
    "PullStarted",
    "ReloadEndpoint",
    "Repaired",
    "ResumeDiscarded",
    "Scrubber",
    "StandaloneAgent",
    "Unpinned",
    "Verification",
    "VerifyConfig",
    "VerifyFailed",
    "VerifyReport",
    "Warmed",
    "call_reload",
    "is_permanent",
    "load_config",
    "parse_config",
    "read_config",
    "read_events",
    "run_kubernetes",
    "run_standalone",
    "stop_on_signals",
]
