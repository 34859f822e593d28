"""Which node holds a piece first: rendezvous (highest random weight) hashing.

Every node ranks the same nodes for the same key in the same order, with nothing shared
but the list of names; a node joining or leaving moves only the keys it ranks first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(node: str, key: str) -> int:
    """The node's weight for `key`: the first 8 bytes of sha256(node NUL key), big-endian."""
    digest = hashlib.sha256(f"{node}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rank(nodes: Iterable[str], key: str) -> list[str]:
    """The distinct `nodes`, heaviest first for `key` (ties by name): the same list
    whatever order they come in."""
    return sorted(set(nodes), key=lambda node: (-weight(node, key), node))


def piece_key(sha256: str, index: int) -> str:
    """The key a piece is ranked by: its blob's digest and its index."""
    return f"{sha256}/{index}"
