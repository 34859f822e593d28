"""`modelcache agent --config node.yaml`: hold the configured models, without Kubernetes.

A loop: re-read the config when it changes (and every `resync_seconds`), pull
the active and prefetch versions, flip, call the reload URLs until each has
acknowledged the live version, apply retention, collect garbage. A scrubber
thread re-verifies held files within an I/O budget. Errors are events, never exits:
the next resync retries.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from modelcache.agent.config import AgentConfig, ConfigError, ModelConfig, load_config
from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import Event, EventLog
from modelcache.agent.metrics import AgentMetrics
from modelcache.agent.reload import call_reload
from modelcache.agent.scrubber import Scrubber
from modelcache.api.names import parse_model_ref
from modelcache.sources.base import SourceError
from modelcache.sources.download import PullOptions
from modelcache.store import ModelRef, Store, StoreError

log = logging.getLogger(__name__)


def model_ref(config: ModelConfig) -> ModelRef:
    namespace, name = parse_model_ref(config.name)
    return ModelRef(namespace, name)


class StandaloneAgent:
    """The daemon. `run()` blocks until `stop` is set (SIGTERM in the CLI)."""

    def __init__(self, config_path: Path, *, stdout_events: bool = True) -> None:
        self.config_path = config_path
        self.stop = threading.Event()
        self.config = load_config(config_path)
        self._config_mtime = config_path.stat().st_mtime_ns
        self.metrics = AgentMetrics()
        self.events = EventLog(
            self.config.event_log_path, stdout=stdout_events, node=self.config.node
        )
        self.events.subscribe(self.metrics.observe)
        self.engine = self._make_engine(self.config)
        self.acknowledged: dict[tuple[str, str], str] = {}  # (model, reload URL) -> live version
        self.reconciles = 0
        self.metrics_server: WSGIServer | None = None

    def _make_engine(self, config: AgentConfig) -> CacheEngine:
        store = Store(config.root, high_watermark=config.high_watermark)
        options = PullOptions(
            concurrency=config.pull.concurrency,
            part_size=config.pull.part_size_bytes,
            bandwidth_limit=config.pull.max_bytes_per_second,
        )
        return CacheEngine(store, self.events, options=options)

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_server.server_port if self.metrics_server is not None else None

    def run(self) -> None:
        if self.config.metrics_port is not None:
            self.metrics_server, _ = start_http_server(
                self.config.metrics_port, self.config.metrics_host, registry=self.metrics.registry
            )
        scrubber: Scrubber | None = None
        if self.config.verify.enabled:
            scrubber = Scrubber(
                self.engine,
                bytes_per_second=self.config.verify.max_bytes_per_second,
                pass_interval=self.config.verify.pass_interval_seconds,
                repair=self.config.verify.repair,
                stop=self.stop,
            )
            scrubber.start()
        self.events.emit(
            Event.CONFIG, config=str(self.config_path), models=len(self.config.models), started=True
        )
        next_sync = 0.0
        try:
            while not self.stop.is_set():
                changed = self._reload_config_if_changed()
                if changed or time.monotonic() >= next_sync:
                    self.reconcile()
                    next_sync = time.monotonic() + self.config.resync_seconds
                self.stop.wait(self.config.poll_seconds)
        finally:
            self.stop.set()
            if scrubber is not None:
                scrubber.join(timeout=30)
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            self.events.close()

    def _reload_config_if_changed(self) -> bool:
        try:
            mtime = self.config_path.stat().st_mtime_ns
        except OSError as error:
            self.events.emit(Event.ERROR, operation="config", error=str(error))
            return False
        if mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        try:
            config = load_config(self.config_path)
        except ConfigError as error:
            self.events.emit(Event.ERROR, operation="config", error=str(error))
            return False
        self.config = config
        self.engine = self._make_engine(config)
        self.events.emit(Event.CONFIG, config=str(self.config_path), models=len(config.models))
        return True

    def reconcile(self) -> None:
        """Make the disk and the pods match the config, model by model; errors are events."""
        for model_config in self.config.models:
            try:
                self._reconcile_model(model_config)
            except (SourceError, StoreError, OSError) as error:
                self.events.emit(
                    Event.ERROR, operation="reconcile", model=model_config.name, error=str(error)
                )
        self._record_disk()
        self.reconciles += 1

    def _reconcile_model(self, config: ModelConfig) -> None:
        engine, model = self.engine, model_ref(config)
        engine.pull(model, config.source, config.version)
        for version in config.prefetch:
            engine.pull(model, config.source, version)
        for version in config.pin:
            if engine.store.has_version(model, version):
                engine.store.pin(model, version)
        if engine.store.current(model) != config.version:
            engine.flip(model, config.version)
        self.metrics.set_live(str(model), config.version)
        self._reload(model, config)
        engine.retain(model, config.retain, {config.version, *config.prefetch, *config.pin})
        engine.gc()

    def _reload(self, model: ModelRef, config: ModelConfig) -> None:
        """Call each reload URL that has not yet acknowledged the live version."""
        live = config.version
        for url in config.reload:
            if self.acknowledged.get((str(model), url)) == live:
                continue
            result = call_reload(
                url,
                model=str(model),
                version=live,
                path=self.engine.store.current_path(model),
                timeout=config.reload_timeout_seconds,
            )
            self.events.emit(
                Event.RELOAD,
                model=str(model),
                version=live,
                url=url,
                ok=result.ok,
                status=result.status,
                live_version=result.live_version,
                reason=result.reason,
                seconds=round(result.seconds, 3),
            )
            if result.ok:
                self.acknowledged[(str(model), url)] = live

    def _record_disk(self) -> None:
        usage = self.engine.store.usage()
        self.metrics.disk_bytes.labels("total").set(usage.total_bytes)
        self.metrics.disk_bytes.labels("free").set(usage.free_bytes)
        self.metrics.disk_bytes.labels("blobs").set(usage.blob_bytes)
