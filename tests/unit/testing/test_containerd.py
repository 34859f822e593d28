"""The layer blobs the cluster harness drops after an import, and the disk it plans for."""

from __future__ import annotations

from modelcache.testing.containerd import import_disk_need, unpacked_layer_digests

MANIFEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
LAYER_0 = "sha256:" + "1" * 64
LAYER_1 = "sha256:" + "2" * 64
GONE = "sha256:" + "9" * 64


def listing(*rows: tuple[str, str]) -> str:
    """`ctr content ls` as it prints: a header, then digest, size, age and labels."""
    lines = ["DIGEST\tSIZE\tAGE\tLABELS"]
    lines += [f"{digest}\t1.2kB\t2 seconds\t{labels}" for digest, labels in rows]
    return "\n".join(lines) + "\n"


def manifest_labels(*layers: str) -> str:
    refs = [f"containerd.io/gc.ref.content.l.{i}={d}" for i, d in enumerate(layers)]
    return ",".join([*refs, f"containerd.io/gc.ref.content.config={CONFIG}"])


def test_the_layers_a_manifest_names_are_dropped_but_not_the_manifest_or_its_config() -> None:
    out = listing(
        (MANIFEST, manifest_labels(LAYER_1, LAYER_0)),
        (CONFIG, "containerd.io/gc.ref.snapshot.overlayfs=sha256:" + "f" * 64),
        (LAYER_0, f"containerd.io/uncompressed={LAYER_0}"),
        (LAYER_1, f"containerd.io/uncompressed={LAYER_1}"),
    )
    assert unpacked_layer_digests(out) == sorted([LAYER_0, LAYER_1])


def test_a_layer_already_dropped_is_not_dropped_again() -> None:
    """An image sharing a base layer with one imported earlier names a blob already gone."""
    out = listing((MANIFEST, manifest_labels(GONE, LAYER_0)), (LAYER_0, ""))
    assert unpacked_layer_digests(out) == [LAYER_0]


def test_a_store_without_manifests_drops_nothing() -> None:
    assert unpacked_layer_digests(listing((LAYER_0, ""), (CONFIG, ""))) == []
    assert unpacked_layer_digests("") == []


def test_the_largest_image_counts_twice_once_per_cluster_the_rest_once_per_node() -> None:
    gib = 1 << 30
    assert import_disk_need([[6 * gib, gib // 2]] * 2) == 13 * gib + 6 * gib
    assert import_disk_need([[gib]]) == 2 * gib
    assert import_disk_need([[], [], []]) == 0


def test_a_node_without_the_large_image_does_not_count_it() -> None:
    """kind's held-back worker gets the operator and agent images only."""
    gib = 1 << 30
    assert import_disk_need([[6 * gib, gib], [6 * gib, gib], [gib]]) == 15 * gib + 6 * gib
