"""The agent's two conversations with the API server: its own NodeCache in, its status out.

The watch uses a field selector on the node's name, so an agent never lists the
cluster; it re-lists after a watch expires (410) and backs off while the API
server is away. Status patches are coalesced to at most one per interval, so
progress reports never flood the API server.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from urllib3.exceptions import HTTPError

from modelcache.agent.kube import ApiError, KubeClient, custom_objects_path
from modelcache.api import GROUP, NODE_CACHES, VERSION, NodeCacheSpec

log = logging.getLogger(__name__)


class NodeCacheWatcher:
    """Keeps `spec` equal to the node's NodeCache spec and calls `changed()` on every change."""

    def __init__(
        self,
        api: KubeClient,
        node: str,
        changed: Callable[[], None],
        stop: threading.Event,
        *,
        watch_timeout: int = 300,
    ) -> None:
        self.api = api
        self.node = node
        self.changed = changed
        self.stop = stop
        self.watch_timeout = watch_timeout
        self.spec: NodeCacheSpec | None = None
        self.exists = False
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name="nodecache-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                version = self._list()
                backoff = 0.5
                self._watch(version)
            except ApiError as error:
                if error.status != 410:  # 410: the watch expired; re-list at once
                    log.warning("NodeCache watch: API error %s %s", error.status, error.reason)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            except (HTTPError, OSError) as error:
                log.warning("NodeCache watch: API server unreachable (%s), retrying", error)
                self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            self.reconnects += 1

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds * (0.5 + random.random()))  # noqa: S311 - jitter, not secrets

    def _list(self) -> str:
        listed = self.api.list(
            custom_objects_path(GROUP, VERSION, NODE_CACHES),
            fieldSelector=f"metadata.name={self.node}",
        )
        items = listed.get("items") or []
        self._apply(items[0] if items else None)
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, resource_version: str) -> None:
        # An ERROR event raises ApiError; 410 (the version expired) re-lists at once.
        stream = self.api.watch(
            custom_objects_path(GROUP, VERSION, NODE_CACHES),
            resource_version=resource_version,
            timeout_seconds=self.watch_timeout,
            allow_bookmarks=True,
            fieldSelector=f"metadata.name={self.node}",
        )
        for event in stream:
            if self.stop.is_set():
                return
            if event.type == "BOOKMARK":
                continue
            self._apply(None if event.type == "DELETED" else event.object)

    def _apply(self, body: dict[str, Any] | None) -> None:
        spec = NodeCacheSpec.model_validate((body or {}).get("spec") or {}) if body else None
        if spec != self.spec or self.exists != (body is not None):
            self.spec, self.exists = spec, body is not None
            self.changed()


class StatusReporter:
    """Patches NodeCache status from `build()` when marked dirty, at most once per interval."""

    def __init__(
        self,
        api: KubeClient,
        node: str,
        build: Callable[[], dict[str, Any]],
        stop: threading.Event,
        *,
        min_interval: float = 0.5,
    ) -> None:
        self.api = api
        self.node = node
        self.build = build
        self.stop = stop
        self.min_interval = min_interval
        self.patches = 0
        self._dirty = threading.Event()
        self._last = 0.0
        self._thread = threading.Thread(target=self._run, name="nodecache-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def mark(self) -> None:
        self._dirty.set()

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self._dirty.wait(0.5):
                continue
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                self.stop.wait(wait)
            self._dirty.clear()
            self.flush()

    def flush(self) -> None:
        try:
            self.api.patch(
                custom_objects_path(GROUP, VERSION, NODE_CACHES, self.node, subresource="status"),
                {"status": self.build()},
            )
            self.patches += 1
        except ApiError as error:
            if error.status != 404:  # no NodeCache yet: nothing to report on
                log.warning("status patch failed: %s %s", error.status, error.reason)
                self._dirty.set()
        except (HTTPError, OSError) as error:
            log.warning("status patch failed, API server unreachable: %s", error)
            self._dirty.set()
        self._last = time.monotonic()
