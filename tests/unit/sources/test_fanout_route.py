"""Which node each piece comes from: the same answer on every node, with no coordinator.

The peers here are real clients of addresses nothing listens on (refused at once), so the
route's first question, "who holds the whole blob?", finds no holder, as on a new version.
"""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.fleet import InFlight, PeerClient, PieceAbsent, PiecePending, rank
from modelcache.sources import BlobRoute, FanoutOptions, Fleet, PeerReport
from modelcache.sources.fanout import ORIGIN

SHA = "ab" * 32
NODES = ["gpu-a", "gpu-b", "gpu-c", "gpu-d", "gpu-e", "gpu-f"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Told(PeerReport):
    def __init__(self) -> None:
        self.unavailable_peers: list[str] = []
        self.bad: list[tuple[str, int]] = []

    def bad_piece(self, peer: str, index: int) -> None:
        self.bad.append((peer, index))

    def unavailable(self, peer: str, reason: str) -> None:
        self.unavailable_peers.append(peer)


def clients(me: str, nodes: list[str]) -> dict[str, PeerClient]:
    return {n: PeerClient(n, "http://127.0.0.1:1", "t" * 43) for n in nodes if n != me}


def fleet(me: str, nodes: list[str], options: FanoutOptions | None = None) -> Fleet:
    peers = clients(me, nodes)
    return Fleet(
        me, lambda m, v: peers, InFlight(), threading.Semaphore(4), options or FanoutOptions()
    )


def route(me: str, pieces: int = 64, **kwargs: object) -> tuple[BlobRoute, Clock, Told]:
    clock, told = Clock(), Told()
    options = FanoutOptions(**kwargs)  # type: ignore[arg-type]
    made = BlobRoute(fleet(me, NODES, options), clients(me, NODES), SHA, pieces, told, clock=clock)
    return made, clock, told


def test_each_piece_has_one_first_node_which_alone_goes_to_l3() -> None:
    routes = {me: route(me)[0] for me in NODES}
    for index in range(64):
        to_l3 = [me for me, r in routes.items() if r.candidates(index) == [ORIGIN]]
        assert to_l3 == [rank(NODES, f"{SHA}/{index}")[0]]
        for me, r in routes.items():  # the others ask the nodes above them, first one first
            ranked = rank(NODES, f"{SHA}/{index}")
            assert r.candidates(index) == [*ranked[: ranked.index(me)], ORIGIN]


def test_a_node_fetches_its_own_share_first_then_the_rest_in_order() -> None:
    r = route("gpu-c")[0]
    order = r.schedule()
    assert sorted(order) == list(range(64))
    mine = [i for i in range(64) if rank(NODES, f"{SHA}/{i}")[0] == "gpu-c"]
    assert order[: len(mine)] == mine
    assert order[len(mine) :] == sorted(set(range(64)) - set(mine))


def test_a_peer_not_pulling_is_waited_for_until_the_grace_then_skipped() -> None:
    r, clock, told = route("gpu-f", absent_grace=10.0)
    index = next(i for i in range(64) if len(r.candidates(i)) > 2)
    first = r.candidates(index)[0]
    assert first is not None
    clock.now += 9.0
    assert r.keep_waiting(first, PieceAbsent("absent"))
    clock.now += 2.0
    assert not r.keep_waiting(first, PieceAbsent("absent"))
    assert first not in r.candidates(index)  # and for every other piece of the blob
    assert all(first not in r.candidates(i) for i in range(64))
    assert told.unavailable_peers == []  # not pulling is no failure


def test_a_pending_peer_is_waited_for_while_it_verifies_more_and_dropped_when_stuck() -> None:
    r, clock, told = route("gpu-f", stall_timeout=30.0)
    peer = "gpu-a"
    assert r.keep_waiting(peer, PiecePending("pending", verified=3))
    for verified in range(4, 10):  # slow but moving: minutes of waiting are fine
        clock.now += 25.0
        assert r.keep_waiting(peer, PiecePending("pending", verified=verified))
    clock.now += 20.0
    assert r.keep_waiting(peer, PiecePending("pending", verified=9))
    clock.now += 11.0  # 31 s without one more verified piece
    assert not r.keep_waiting(peer, PiecePending("pending", verified=9))
    assert told.unavailable_peers == [peer]
    assert all(peer not in r.candidates(i) for i in range(64))


def test_a_bad_piece_is_reported_and_its_peer_avoided_for_the_blob() -> None:
    r, _, told = route("gpu-f")
    r.bad_piece("gpu-b", 7)
    assert told.bad == [("gpu-b", 7)]
    assert all("gpu-b" not in r.candidates(i) for i in range(64))
    assert all(r.candidates(i)[-1] is ORIGIN for i in range(64))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), min_size=1, max_size=8, unique=True
    ),
    st.integers(0, 10_000),
)
def test_every_node_agrees_on_the_assignee_of_a_piece(nodes: list[str], index: int) -> None:
    assignees = set()
    for me in nodes:
        r = BlobRoute(fleet(me, nodes), clients(me, list(reversed(nodes))), SHA, index + 1)
        if r.candidates(index) == [ORIGIN]:
            assignees.add(me)
    assert len(assignees) == 1
