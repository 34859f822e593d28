"""Rendezvous ranking: every node computes the same order from the names alone, a node
leaving moves only the keys it ranked first, and keys spread evenly over the nodes."""

from __future__ import annotations

import hashlib
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from modelcache.fleet import piece_key, rank, weight

_names = st.lists(st.from_regex(r"node-[a-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=12)
_keys = st.text(min_size=1, max_size=80)


@given(nodes=_names, key=_keys, data=st.data())
def test_every_node_ranks_the_same_whatever_order_it_lists_them(
    nodes: list[str], key: str, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(nodes))
    assert rank(shuffled, key) == rank(nodes, key)
    assert sorted(rank(nodes, key)) == sorted(set(nodes))


@given(nodes=_names.filter(lambda n: len(set(n)) > 1), key=_keys, data=st.data())
def test_removing_a_node_keeps_the_order_of_the_others(
    nodes: list[str], key: str, data: st.DataObject
) -> None:
    """So a key moves only when the removed node was its first: the others keep theirs."""
    gone = data.draw(st.sampled_from(nodes))
    before = rank(nodes, key)
    after = rank([n for n in nodes if n != gone], key)
    assert after == [n for n in before if n != gone]
    if before[0] != gone:
        assert after[0] == before[0]


def test_the_weight_is_the_contract_s_sha256_prefix() -> None:
    """Nodes of different versions must agree: sha256(node NUL key), 8 bytes, big-endian."""
    expected = int.from_bytes(hashlib.sha256(b"node-a\0abc/3").digest()[:8], "big")
    assert weight("node-a", "abc/3") == expected
    assert piece_key("ab" * 32, 3) == f"{'ab' * 32}/3"


def test_keys_spread_roughly_evenly_over_six_nodes() -> None:
    nodes = [f"gpu-node-{i}" for i in range(6)]
    digest = hashlib.sha256(b"a model file").hexdigest()
    keys = 6000
    firsts = Counter(rank(nodes, piece_key(digest, i))[0] for i in range(keys))
    assert set(firsts) == set(nodes)
    for node in nodes:
        assert abs(firsts[node] - keys / 6) < keys / 6 * 0.15, firsts


def test_ties_in_weight_fall_back_to_the_name() -> None:
    assert rank(["b", "a", "b"], "k") == rank(["a", "b"], "k")
    assert len(rank(["b", "a", "b"], "k")) == 2
