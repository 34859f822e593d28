"""The site's peers of a Kubernetes-mode agent, from the NodeCaches (docs/fanout.md).

Each agent reports in its own NodeCache's status where its peer server is reached and its
site (a node label, `topology.kubernetes.io/zone` by default); the admission policy keeps
a node from writing another's. A pull's peers for a version are the other nodes of the
site whose spec wants that version or whose status holds it: every node computes the same
rendezvous order from the same NodeCaches, with nothing to ask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from modelcache.agent.kube import ApiError, KubeClient, core_path, custom_objects_path
from modelcache.api import GROUP, NODE_CACHES, VERSION, NodeCacheSpec, NodeCacheStatus, check_url

log = logging.getLogger(__name__)

DEFAULT_SITE_LABEL = "topology.kubernetes.io/zone"
REFRESH_SECONDS = 10.0
"""How stale the list of peers may be: one list of NodeCaches per agent per this many
seconds at most, however many files a pull has (500 nodes: 50 lists a second at most)."""
UNKNOWN_REFRESH_SECONDS = 1.0
"""...unless a version has no peer in the last list: a rollout's NodeCaches are written
within moments of each other, so the list is asked again after this long."""


@dataclass(frozen=True)
class SitePeer:
    """Another node of the site: its peer URL and the (model, version)s it wants or holds."""

    url: str
    versions: frozenset[tuple[str, str]]


def node_site(api: KubeClient, node: str, label: str) -> str:
    """This node's site: its `label`, or "" (one site) when the node has none or cannot be
    read (then every node reporting no site is this node's site too)."""
    try:
        found = api.get(core_path("nodes", node))
    except (ApiError, HTTPError, OSError) as error:  # an unreadable node: one site, said so
        log.warning("cannot read node %s for its site label %s: %s", node, label, error)
        return ""
    labels = (found.get("metadata") or {}).get("labels") or {}
    site = labels.get(label, "")
    return site if isinstance(site, str) else ""


def parse_peers(items: list[dict[str, Any]], me: str, site: str) -> dict[str, SitePeer]:
    """The NodeCaches of the site's other nodes that serve peers. One that cannot be read
    (a newer agent's fields, a hand-edited status) is skipped, never trusted in part."""
    peers: dict[str, SitePeer] = {}
    for item in items:
        name = (item.get("metadata") or {}).get("name")
        if not isinstance(name, str) or name == me:
            continue
        try:
            spec = NodeCacheSpec.model_validate(item.get("spec") or {})
            status = NodeCacheStatus.model_validate(item.get("status") or {})
            if status.peer is None or status.peer.site != site:
                continue
            url = check_url(status.peer.url, "peer URL", "peers authenticate with the token")
        except (ValidationError, ValueError) as error:
            log.warning("skipping NodeCache %s as a peer: %s", name, str(error)[:200])
            continue
        if not url.startswith(("http://", "https://")):
            continue
        wanted = {(m.key, v) for m in spec.models for v in m.versions}
        held = {
            (f"{m.namespace}/{m.name}", v.version)
            for m in status.models
            for v in m.versions
            if v.state == "Cached"
        }
        peers[name] = SitePeer(url, frozenset(wanted | held))
    return peers


class SitePeers:
    """`members(model, version)`: the site's other nodes for that version, by name -> URL,
    from NodeCaches listed at most every `refresh` seconds."""

    def __init__(
        self,
        api: KubeClient,
        node: str,
        site: str,
        *,
        refresh: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.node = node
        self.site = site
        self.refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._peers: dict[str, SitePeer] = {}
        self._listed_at: float | None = None

    def members(self, model: str, version: str) -> dict[str, str]:
        found = self._wanting(self._current(self.refresh), model, version)
        if not found:  # perhaps written since the last list: ask again, at most every second
            found = self._wanting(self._current(UNKNOWN_REFRESH_SECONDS), model, version)
        return found

    @staticmethod
    def _wanting(peers: dict[str, SitePeer], model: str, version: str) -> dict[str, str]:
        return {
            name: peer.url
            for name, peer in sorted(peers.items())
            if (model, version) in peer.versions
        }

    def _current(self, max_age: float) -> dict[str, SitePeer]:
        """The peers as last listed, listed again when older than `max_age`. One list at a
        time: pulls that start together (a version and its rollback target) wait for the
        list in flight instead of taking the empty one from before it."""
        with self._lock:
            fresh = self._listed_at is not None and self._clock() - self._listed_at < max_age
            if fresh:
                return self._peers
            try:
                listed = self.api.list(custom_objects_path(GROUP, VERSION, NODE_CACHES))
            except (ApiError, HTTPError, OSError) as error:  # none now: the last list, or L3
                log.warning("cannot list NodeCaches for peers: %s", error)
                return self._peers
            finally:
                self._listed_at = self._clock()
            self._peers = parse_peers(listed.get("items") or [], self.node, self.site)
            return self._peers
