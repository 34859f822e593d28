"""`modelcache agent --config node.yaml`: hold the configured models, without Kubernetes.

An adapter around `NodeReconciler` (which owns the policy, as in the Kubernetes agent):
the desired state comes from node.yaml (re-read when it changes, and every
`resync_seconds`), the reload targets are its URLs, the report goes to the metrics and
the event log. It runs inside an `AgentProcess` set up from the same file (the event log,
the metrics server, a scrubber that re-verifies held files within an I/O budget). Errors
are events, never exits: failed pulls are retried with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from modelcache.agent.config import (
    AgentConfig,
    ConfigError,
    ModelConfig,
    parse_config,
    read_config,
)
from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import ConfigLoaded, Failed
from modelcache.agent.peering import Peering
from modelcache.agent.process import AgentProcess, Verification
from modelcache.agent.reconciler import DesiredModel, NodeReconciler, ReloadEndpoint
from modelcache.api import parse_model_ref
from modelcache.fleet import PeerBounds, TokenError
from modelcache.sources import FanoutOptions, PullOptions, SourceError
from modelcache.store import ModelRef, Store, StoreError

log = logging.getLogger(__name__)


def model_ref(config: ModelConfig) -> ModelRef:
    namespace, name = parse_model_ref(config.name)
    return ModelRef(namespace, name)


def desired(config: ModelConfig) -> DesiredModel:
    return DesiredModel(
        model=model_ref(config),
        source=config.source,
        active=config.version,
        versions=tuple(dict.fromkeys([config.version, *config.prefetch])),
        pins=tuple(config.pin),
        retain=config.retain,
        reload=bool(config.reload),
        reload_timeout=config.reload_timeout_seconds,
    )


def _endpoints(config: AgentConfig) -> dict[str, list[ReloadEndpoint]]:
    return {
        str(model_ref(m)): [ReloadEndpoint(name=url, url=url) for url in m.reload]
        for m in config.models
    }


class StandaloneAgent:
    """The daemon. `run()` blocks until `stop` is set (SIGTERM: `request_stop`)."""

    def __init__(self, config_path: str | os.PathLike[str], *, stdout_events: bool = True) -> None:
        self.config_path = Path(config_path)
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._config_bytes = read_config(self.config_path)
        self._read_problem: str | None = None  # the last config read error reported
        self.config = parse_config(self._config_bytes, self.config_path)
        self.process = _process(self.config, stdout_events=stdout_events)
        self.metrics = self.process.metrics
        self.events = self.process.events
        self.peering = self._peering(self.config)
        self.engine = self._make_engine(self.config)
        self._reload_urls = _endpoints(self.config)
        self.reconciler = NodeReconciler(
            self.engine,
            reload_targets=lambda d: self._reload_urls.get(d.key, []),
            on_pull_end=self._wake.set,
        )
        self.reconciles = 0

    def _make_engine(self, config: AgentConfig) -> CacheEngine:
        store = Store(config.root, high_watermark=config.high_watermark)
        options = PullOptions(
            concurrency=config.pull.concurrency,
            part_size=config.pull.part_size_bytes,
            bandwidth_limit=config.pull.max_bytes_per_second,
            stall_timeout=config.pull.stall_timeout_seconds,
        )
        fleet = None
        if self.peering is not None and config.peers is not None:
            listed = {node.name: node.url for node in config.peers.nodes}
            fleet = self.peering.fleet(lambda model, version: listed)
        return CacheEngine(store, self.events, options=options, fleet=fleet)

    def _peering(self, config: AgentConfig) -> Peering | None:
        """The fan-out's server and clients, set up once: where it listens and its token
        file take effect at start; the list of peers follows the file."""
        peers = config.peers
        if peers is None:
            return None
        assert config.node is not None  # the config's validation requires it with peers
        try:
            return Peering(
                config.node,
                peers.token_file,
                lambda: self.engine.store,
                self.metrics.registry,
                host=peers.listen_host,
                port=peers.listen_port,
                bounds=PeerBounds(
                    max_uploads=peers.max_uploads, max_rate=peers.max_upload_bytes_per_second
                ),
                origin_streams=peers.origin_streams,
                options=FanoutOptions(
                    absent_grace=peers.absent_grace_seconds,
                    stall_timeout=peers.stall_timeout_seconds,
                ),
            )
        except TokenError as error:
            raise ConfigError(f"agent config {self.config_path}: peers: {error}") from None

    @property
    def metrics_port(self) -> int | None:
        server = self.process.metrics_server
        return server.server_port if server is not None else None

    @property
    def peer_port(self) -> int | None:
        return self.peering.port if self.peering is not None else None

    def request_stop(self) -> None:
        """From a signal handler: stop now, not at the next poll."""
        self.stop.set()
        self._wake.set()

    def run(self) -> None:
        """The loop inside its process (metrics server, scrubber, peer server), until
        `stop` is set."""
        with self._serving_peers():
            self.process.run(self._loop, stop=self.stop, engine=lambda: self.engine)

    @contextlib.contextmanager
    def _serving_peers(self) -> Iterator[None]:
        if self.peering is None:
            yield
            return
        self.peering.start()
        try:
            yield
        finally:
            self.peering.stop()

    def _loop(self) -> None:
        self.events.emit(
            ConfigLoaded(config=str(self.config_path), models=len(self.config.models), started=True)
        )
        next_sync = 0.0
        try:
            while not self.stop.is_set():
                changed = self._reload_config_if_changed()
                if changed or self._wake.is_set() or time.monotonic() >= next_sync:
                    self._wake.clear()
                    again = self.reconcile()
                    wait = self.config.resync_seconds if again is None else again
                    next_sync = time.monotonic() + min(wait, self.config.resync_seconds)
                self._wake.wait(self.config.poll_seconds)
        finally:
            self.stop.set()
            self.reconciler.stop_pulls()

    def run_once(self, timeout: float | None = None) -> bool:
        """`agent --once`: pull, flip, reload, retain and collect, then return. True when
        every model is live on its version and every reload target acknowledged it."""
        with self._serving_peers():
            self.reconcile()
            self.reconciler.wait_idle(timeout)
            self.reconcile()
        done = True
        for config in self.config.models:
            report = self.reconciler.report(desired(config))
            if report.reloaded_version != config.version:
                done = False
                for version in report.versions:
                    if version.state == "Failed":
                        log.error("%s %s: %s", config.name, version.version, version.message)
                for reload in report.reloads:
                    if not reload.ok:
                        log.error("%s: reload %s: %s", config.name, reload.pod, reload.reason)
        return done

    def _reload_config_if_changed(self) -> bool:
        # A change is new bytes, not a new mtime: a file rewritten in place can be read
        # half-written, and its complete write can land within the same mtime tick.
        try:
            data = read_config(self.config_path)
        except ConfigError as error:  # a FIFO, a directory, gone: once per problem, not per poll
            if str(error) != self._read_problem:
                self._read_problem = str(error)
                self.events.emit(Failed(operation="config", error=str(error)))
            return False
        self._read_problem = None
        if data == self._config_bytes:
            return False
        self._config_bytes = data
        try:
            config = parse_config(data, self.config_path)
        except ConfigError as error:
            self.events.emit(Failed(operation="config", error=str(error)))
            return False
        if _engine_settings(config) != _engine_settings(self.config):
            # Pulls in flight finish on the old engine; the scrubber follows `self.engine`.
            self.engine = self._make_engine(config)
            self.reconciler.engine = self.engine
        self.config = config
        self._reload_urls = _endpoints(config)
        self.events.emit(ConfigLoaded(config=str(self.config_path), models=len(config.models)))
        return True

    def reconcile(self) -> float | None:
        """One step of the node reconciler; errors are events. Returns when a retry is due."""
        again: float | None = None
        try:
            again = self.reconciler.step([desired(m) for m in self.config.models])
        except (SourceError, StoreError, OSError) as error:
            self.events.emit(Failed(operation="reconcile", error=str(error)))
        for config in self.config.models:
            live = self.engine.store.current(model_ref(config))
            if live is not None:
                self.metrics.set_live(str(model_ref(config)), live)
        self._record_disk()
        self.reconciles += 1
        return again

    def _record_disk(self) -> None:
        self.metrics.record_disk(self.engine.store.usage())


def _process(config: AgentConfig, *, stdout_events: bool) -> AgentProcess:
    """The process around the agent, as node.yaml sets it up when the agent starts."""
    verify = config.verify
    return AgentProcess(
        config.event_log_path,
        node=config.node,
        stdout_events=stdout_events,
        metrics_port=config.metrics_port,
        metrics_host=config.metrics_host,
        verify=(
            Verification(verify.max_bytes_per_second, verify.pass_interval_seconds, verify.repair)
            if verify.enabled
            else None
        ),
    )


def _engine_settings(config: AgentConfig) -> tuple[object, ...]:
    return (config.root, config.high_watermark, config.pull, config.peers)
