"""Which node each piece comes from: the same answer on every node, with no coordinator.

The peers here are real clients of addresses nothing listens on (refused at once), so the
route's first question, "who holds the whole blob?", finds no holder, as on a new version.
"""

from __future__ import annotations

import hashlib
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.api.manifest import ManifestFile, Pieces
from modelcache.fleet import Body, InFlight, PeerBusy, PeerClient, PieceAbsent, PiecePending, rank
from modelcache.sources import BlobRoute, FanoutOptions, Fleet, PeerReport
from modelcache.sources.fanout import ORIGIN, FanoutRouter
from modelcache.sources.pieces import ObjectPieces, Piece, PieceRead

SHA = "ab" * 32
PIECE_BYTES = 4 * 1024 * 1024
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


class BusyPeer(PeerClient):
    """A peer at its upload cap for its first `busy` asks, then serving the piece."""

    def __init__(self, name: str, busy: int, data: bytes) -> None:
        super().__init__(name, "http://127.0.0.1:1", "t" * 43)
        self.busy, self.data, self.asked = busy, data, 0

    def piece(self, sha256: str, index: int, size: int, *, length: int | None = None) -> Body:
        self.asked += 1
        if self.asked <= self.busy:
            raise PeerBusy(f"peer {self.name} answered 503: 4 uploads at once already")
        return _Served(self.name, self.data)  # type: ignore[return-value]


class _Served:
    """What a Body gives the router: chunks, and close()."""

    def __init__(self, peer: str, data: bytes) -> None:
        self.chunks = iter([data])

    def __iter__(self) -> _Served:
        return self

    def __next__(self) -> bytes:
        return next(self.chunks)

    def close(self) -> None:
        pass


class _L3:
    """Stands for L3 here: only named, never read (the test reads from the peer or not at all)."""

    def describe(self, key: str) -> str:
        return f"oss://models/{key}"


def busy_router(busy: int, stall_timeout: float) -> tuple[FanoutRouter, BusyPeer, PieceRead]:
    """gpu-b, below gpu-a for a piece gpu-a fetches from L3; gpu-a answers busy first."""
    data = b"x" * PIECE_BYTES
    peer = BusyPeer("gpu-a", busy, data)
    options = FanoutOptions(stall_timeout=stall_timeout, poll_interval=0.01)
    peers = {"gpu-a": peer}
    fleet = Fleet("gpu-b", lambda m, v: peers, InFlight(), threading.Semaphore(4), options)  # type: ignore[arg-type,return-value]
    index = next(i for i in range(64) if rank(["gpu-a", "gpu-b"], f"{SHA}/{i}")[0] == "gpu-a")
    entry = ManifestFile(
        path="w.bin",
        size=64 * PIECE_BYTES,
        sha256=SHA,
        crc64="0",
        pieces=Pieces(size=PIECE_BYTES, sha256=(hashlib.sha256(data).hexdigest(),) * 64),
    )
    router = FanoutRouter(BlobRoute(fleet, peers, SHA, 64, Told()), entry)  # type: ignore[arg-type]
    piece = Piece(index, index * PIECE_BYTES, (index + 1) * PIECE_BYTES, entry.pieces.sha256[0])  # type: ignore[union-attr]
    l3 = ObjectPieces(_L3(), "v1/w.bin", "etag")  # type: ignore[arg-type]
    return router, peer, PieceRead(piece, 0, (), l3)


def test_a_busy_peer_is_asked_again_not_avoided_so_the_piece_never_goes_to_l3() -> None:
    router, peer, read = busy_router(busy=3, stall_timeout=30.0)
    source = router(read)
    assert source.describe() == "peer gpu-a"
    assert b"".join(source.read(read.piece, 0, PIECE_BYTES)) == b"x" * PIECE_BYTES
    assert peer.asked == 4
    assert router.route.candidates(read.piece.index) == ["gpu-a", ORIGIN]
    assert router.route.report.unavailable_peers == []  # type: ignore[attr-defined]


def test_a_peer_busy_past_the_stall_timeout_loses_the_piece_but_stays_a_candidate() -> None:
    router, _, read = busy_router(busy=10**6, stall_timeout=0.05)
    source = router(read)
    assert source.describe() == read.l3.describe()
    assert router.route.candidates(read.piece.index) == ["gpu-a", ORIGIN]
    assert router.route.report.unavailable_peers == []  # type: ignore[attr-defined]
