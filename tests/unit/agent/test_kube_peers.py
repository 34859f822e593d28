"""Which NodeCaches are a version's peers: the same site, a peer URL, wanting or holding it;
a NodeCache that cannot be read is skipped whole, never trusted in part."""

from __future__ import annotations

from typing import Any

from modelcache.agent.kubepeers import parse_peers


def nodecache(
    name: str,
    *,
    site: str = "zone-a",
    url: str | None = "http://10.88.1.7:9471",
    wants: tuple[str, ...] = (),
    holds: tuple[str, ...] = (),
    extra_status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "models": [
            {
                "namespace": "studio",
                "name": "sdxl",
                "versions": [{"version": v, "state": "Cached"} for v in holds],
            }
        ]
    }
    if url is not None:
        status["peer"] = {"url": url, "site": site}
    status |= extra_status or {}
    spec = {
        "models": [
            {
                "namespace": "studio",
                "name": "sdxl",
                "source": "oss://b/sdxl",
                "versions": list(wants),
            }
        ]
    }
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def test_peers_are_the_site_s_other_nodes_that_want_or_hold_a_version() -> None:
    items = [
        nodecache("me", wants=("v2",)),
        nodecache("wants", wants=("v2",)),
        nodecache("holds", holds=("v1",)),
        nodecache("elsewhere", site="zone-b", wants=("v2",)),
        nodecache("no-server", url=None, wants=("v2",)),
    ]
    peers = parse_peers(items, "me", "zone-a")
    assert sorted(peers) == ["holds", "wants"]
    assert ("studio/sdxl", "v2") in peers["wants"].versions
    assert ("studio/sdxl", "v1") in peers["holds"].versions
    assert ("studio/sdxl", "v2") not in peers["holds"].versions


def test_a_nodecache_that_cannot_be_trusted_is_skipped_whole() -> None:
    items = [
        nodecache("secret-in-url", url="http://user:password@10.0.0.3:9471", wants=("v2",)),
        nodecache("not-http", url="file:///etc/passwd", wants=("v2",)),
        nodecache("unknown-field", wants=("v2",), extra_status={"surprise": 1}),
        {"metadata": {"name": "garbage"}, "spec": "nonsense", "status": []},
        {"metadata": {}, "spec": {}},
        nodecache("good", wants=("v2",)),
    ]
    assert sorted(parse_peers(items, "me", "zone-a")) == ["good"]


def test_without_a_site_label_every_node_without_one_is_one_site() -> None:
    items = [nodecache("a", site="", wants=("v1",)), nodecache("b", site="zone-a", wants=("v1",))]
    assert sorted(parse_peers(items, "me", "")) == ["a"]
