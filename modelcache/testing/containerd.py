"""What the cluster harness reads off a node's containerd, and the disk its images take.

Pure functions over `ctr` output and image sizes, so they are tested without a node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

BIG_IMAGE_BYTES = 1 << 30
"""An image at least this large is imported into one node at a time: each import holds
the image twice (blobs and unpacked) until its layers are dropped."""

_LAYER_REF = re.compile(r"containerd\.io/gc\.ref\.content\.l\.\d+=(sha256:[0-9a-f]{64})")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def unpacked_layer_digests(content_listing: str) -> list[str]:
    """The layer blobs that `ctr content ls` lists and some manifest names as a layer.

    Once an image is unpacked its containers run from the snapshots, so these blobs are
    only a second copy; manifests and configs (which the CRI reads) are never listed.
    """
    present: set[str] = set()
    layers: set[str] = set()
    for line in content_listing.splitlines():
        fields = line.split()
        if not fields or not _DIGEST.fullmatch(fields[0]):
            continue
        present.add(fields[0])
        layers.update(_LAYER_REF.findall(line))
    return sorted(layers & present)


def import_disk_need(per_node: Sequence[Sequence[int]]) -> int:
    """Bytes a cluster's image imports take at their peak: each node's images once, plus
    a second copy of the largest while it imports (big ones go one node at a time)."""
    sizes = [size for node in per_node for size in node]
    if not sizes:
        return 0
    return sum(sizes) + max(sizes)
