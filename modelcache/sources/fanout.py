"""Which node each piece of a blob comes from, decided on every node alike with nothing to ask.

For each piece, the site's nodes that want the version are ranked by rendezvous hashing
(`modelcache.fleet.rank`). The first of them fetches the piece from L3; every other node
takes it from a node ranked above it: one that already holds the whole blob first (a node
joining, a rollback), then the others in rank order, waiting while a node is fetching it,
and falls to the next one when a node is absent past a grace, stalls, fails, or serves a
piece that fails the publisher's digest; its own place in the order means "from L3". So
with no coordinator each piece crosses the WAN once per site, and a dead or lying peer
costs a detour, never a wrong byte (docs/fanout.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from modelcache.api.manifest import ManifestFile
from modelcache.fleet import (
    Body,
    InFlight,
    PeerBusy,
    PeerClient,
    PeerError,
    PieceAbsent,
    PiecePending,
    TokenError,
    piece_key,
    rank,
)
from modelcache.sources.base import SourceUnreachable
from modelcache.sources.pieces import ObjectPieces, Piece, PieceRead, PieceSource

ORIGIN = None
"""A candidate that is not a peer: the piece comes from L3."""


@dataclass(frozen=True)
class FanoutOptions:
    """How patient a node is with its peers. `absent_grace`: how long a peer that does not
    pull the blob (yet) is waited for, from when this node began it: nodes start a rollout
    seconds apart. `stall_timeout`: how long a peer may keep a piece pending without
    verifying any piece of the blob."""

    absent_grace: float = 10.0
    stall_timeout: float = 30.0
    poll_interval: float = 0.25


Members = Callable[[str, str], Mapping[str, PeerClient]]
"""(model, version) -> the clients of the site's other nodes that want that version or hold
it, by node name: the nodes a piece's rendezvous order ranks, with this one."""


@dataclass
class Fleet:
    """A node's site, as a pull sees it: its own name, who its peers are for a version, the
    registry of what it serves while pulling, and the cap of its concurrent L3 streams."""

    me: str
    members: Members
    inflight: InFlight
    origin_streams: threading.Semaphore
    options: FanoutOptions = FanoutOptions()


class PeerReport:
    """What a route tells its caller (the engine makes events and metrics of it)."""

    def bad_piece(self, peer: str, index: int) -> None:
        """`peer` served piece `index` with bytes that fail its digest."""

    def unavailable(self, peer: str, reason: str) -> None:
        """`peer` refused, failed or stalled: it is skipped for the rest of the blob."""


@dataclass
class _Waiting:
    """A peer's pending answers for this blob: when it last verified a piece more."""

    verified: int = -1
    since: float = field(default_factory=time.monotonic)


class BlobRoute:
    """The order in which one blob's pieces are fetched and, per piece, where from."""

    def __init__(
        self,
        fleet: Fleet,
        peers: Mapping[str, PeerClient],
        sha256: str,
        pieces: int,
        report: PeerReport | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self.peers = {name: client for name, client in peers.items() if name != fleet.me}
        self.sha256 = sha256
        self.pieces = pieces
        self.report = report or PeerReport()
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._avoided: set[str] = set()
        self._absent: set[str] = set()  # not pulling the blob, past the grace
        self._waiting: dict[str, _Waiting] = {}
        self.holders = self._probe_holders()

    def _probe_holders(self) -> frozenset[str]:
        """The peers that hold the whole blob already: asked at once, each bounded in time."""
        peers = self.peers
        if not peers:
            return frozenset()

        def holds(name: str) -> bool:
            try:
                return peers[name].holds(self.sha256)
            except PeerError:
                return False

        with ThreadPoolExecutor(min(16, len(peers)), thread_name_prefix="modelcache-probe") as pool:
            answers = dict(zip(peers, pool.map(holds, peers), strict=True))
        return frozenset(name for name, held in answers.items() if held)

    @property
    def nodes(self) -> list[str]:
        return [self.fleet.me, *self.peers]

    def ranked(self, index: int) -> list[str]:
        return rank(self.nodes, piece_key(self.sha256, index))

    def candidates(self, index: int) -> list[str | None]:
        """Where piece `index` is asked for, in order: the holders of the whole blob, then
        the nodes ranked above this one; `ORIGIN` (L3) last, this node's own place."""
        ranked = self.ranked(index)
        with self._lock:
            skipped = self._avoided | self._absent
        holders = [n for n in ranked if n in self.holders and n not in skipped]
        above = ranked[: ranked.index(self.fleet.me)]
        rest = [n for n in above if n not in skipped and n not in self.holders]
        return [*holders, *rest, ORIGIN]

    # -- what a peer's answers mean for the rest of the blob ------------------------------

    def avoid(self, peer: str, reason: str) -> None:
        with self._lock:
            if peer in self._avoided:
                return
            self._avoided.add(peer)
        self.report.unavailable(peer, reason)

    def bad_piece(self, peer: str, index: int) -> None:
        with self._lock:
            self._avoided.add(peer)
        self.report.bad_piece(peer, index)

    def keep_waiting(self, peer: str, answer: PieceAbsent | PiecePending) -> bool:
        """Whether to ask `peer` again after this answer, or move on: an absent peer is
        waited for until the grace since this blob began; a pending one while it verifies
        more pieces of the blob at least every `stall_timeout` seconds."""
        options = self.fleet.options
        now = self._clock()
        if isinstance(answer, PieceAbsent):
            if now - self._started < options.absent_grace:
                return True
            with self._lock:
                self._absent.add(peer)
            return False
        with self._lock:
            waiting = self._waiting.setdefault(peer, _Waiting(answer.verified, now))
            if answer.verified > waiting.verified:
                waiting.verified, waiting.since = answer.verified, now
            stalled = now - waiting.since > options.stall_timeout
        if stalled:
            self.avoid(peer, f"kept piece(s) pending for {options.stall_timeout:g} s")
        return not stalled

    def polls(self) -> Iterator[float]:
        """Pauses between asks of a peer that said pending or absent: soon, then every second."""
        pause = self.fleet.options.poll_interval
        while True:
            yield pause
            pause = min(1.0, pause * 2)


PEER = "peer "
"""How a peer source describes itself: `peer <name>` (what a mismatch is reported as)."""


@dataclass(frozen=True)
class PieceTally:
    """Where a blob's verified pieces came from, for its FileFetched event and the metrics."""

    pieces_from_l3: int = 0
    pieces_from_peers: int = 0
    bytes_from_l3: int = 0
    bytes_from_peers: int = 0
    peers: tuple[str, ...] = ()


class FanoutRouter:
    """The `PieceRouter` of one blob pulled with peers (`download_file(route=...)`).

    A piece with the publisher's digest may come from any node that ranks above this one;
    a part of a file published without piece digests (schema 1) only from a node holding
    the whole, verified blob, since its bytes are checked only with the whole file."""

    def __init__(self, route: BlobRoute, entry: ManifestFile) -> None:
        self.route = route
        self.entry = entry
        self._lock = threading.Lock()
        # piece -> (the peer of its last read, None for L3; its length)
        self._source: dict[int, tuple[str | None, int]] = {}
        self._reported: set[tuple[str, int]] = set()
        self._counts: dict[str | None, list[int]] = {}  # source -> [pieces, bytes]

    @property
    def sha256(self) -> str:
        return self.route.sha256

    def __call__(self, read: PieceRead) -> PieceSource:
        index = read.piece.index
        self._report_mismatches(read)
        if not read.stopping():
            for candidate in self._candidates(read.piece):
                if candidate is ORIGIN:
                    break
                if PEER + candidate in read.mismatched:
                    continue
                body = self._ask(candidate, read)
                if body is not None:
                    with self._lock:
                        self._source[index] = (candidate, read.piece.length)
                    return _PeerPieces(self, candidate, body, read.offset)
                if read.stopping():
                    break
        with self._lock:
            self._source[index] = (None, read.piece.length)
        return _OriginPieces(read.l3, self.route.fleet.origin_streams)

    def _candidates(self, piece: Piece) -> list[str | None]:
        if piece.sha256 is not None:
            return self.route.candidates(piece.index)
        ranked = self.route.ranked(piece.index)
        return [*(n for n in ranked if n in self.route.holders), ORIGIN]

    def _report_mismatches(self, read: PieceRead) -> None:
        for source in read.mismatched:
            if not source.startswith(PEER):
                continue
            key = (source[len(PEER) :], read.piece.index)
            with self._lock:
                if key in self._reported:
                    continue
                self._reported.add(key)
            self.route.bad_piece(key[0], key[1])

    def _ask(self, peer: str, read: PieceRead) -> Body | None:
        """The peer's answer for the piece, opened; None when it is not to be had there:
        asked again while the peer is fetching it (or may begin to), within the route's
        patience. A peer at its upload cap is asked again too, for at most `stall_timeout`:
        it is serving the site, so it is never avoided for that (when a piece is new, every
        node below its first asks the first at once, far beyond its `max_uploads`)."""
        polls = self.route.polls()
        busy_since: float | None = None
        while not read.stopping():
            try:
                return self.open(peer, read.piece)
            except PeerBusy:
                now = time.monotonic()
                busy_since = now if busy_since is None else busy_since
                if now - busy_since > self.route.fleet.options.stall_timeout:
                    return None  # this piece elsewhere; the peer stays a candidate
                time.sleep(next(polls))
            except (PiecePending, PieceAbsent) as answer:
                if not self.route.keep_waiting(peer, answer):
                    return None
                time.sleep(next(polls))
            except (PeerError, TokenError) as error:
                self.route.avoid(peer, str(error))
                return None
        return None

    def open(self, peer: str, piece: Piece) -> Body:
        client = self.route.peers[peer]
        if piece.sha256 is None or self.entry.pieces is None:
            return client.blob(self.sha256, piece.start, piece.length)
        return client.piece(self.sha256, piece.index, self.entry.pieces.size, length=piece.length)

    def stream(self, peer: str, piece: Piece, offset: int, body: Body | None) -> Iterator[bytes]:
        """The piece's bytes after its first `offset`, from `peer`; a peer that fails on the
        way is avoided and the failure is one a retry cures (from the next candidate)."""
        try:
            if body is None:
                body = self.open(peer, piece)
            skip = offset
            for chunk in body:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                yield chunk[skip:] if skip else chunk
                skip = 0
        except PeerBusy as error:  # asked again on the retry (from the next candidate)
            raise SourceUnreachable(f"{PEER}{peer}: {error}") from None
        except (PeerError, TokenError) as error:
            self.route.avoid(peer, str(error))
            raise SourceUnreachable(f"{PEER}{peer}: {error}") from None
        finally:
            if body is not None:
                body.close()

    def verified(self, piece: int) -> None:
        """Piece `piece` passed its digest: count it for the source of its last read."""
        with self._lock:
            if piece in self._source:  # else claimed by an earlier run's record
                self._count(*self._source.pop(piece))

    def _count(self, source: str | None, length: int) -> None:
        tally = self._counts.setdefault(source, [0, 0])
        tally[0] += 1
        tally[1] += length

    def tally(self) -> PieceTally:
        """Where the file's pieces came from. Parts without digests (schema 1) are checked
        only with the whole file: once it passed, each counts for the source of its last read."""
        with self._lock:
            if self.entry.pieces is None:
                for source, length in self._source.values():
                    self._count(source, length)
                self._source.clear()
            counts = dict(self._counts)
        l3 = counts.pop(None, [0, 0])
        return PieceTally(
            pieces_from_l3=l3[0],
            pieces_from_peers=sum(c[0] for c in counts.values()),
            bytes_from_l3=l3[1],
            bytes_from_peers=sum(c[1] for c in counts.values()),
            peers=tuple(sorted(name for name in counts if name is not None)),
        )


@dataclass(frozen=True)
class _PeerPieces:
    """A piece from a peer, starting with the answer the router already opened."""

    router: FanoutRouter
    peer: str
    body: Body
    offset: int

    def describe(self) -> str:
        return PEER + self.peer

    def read(self, piece: Piece, offset: int, chunk: int) -> Iterator[bytes]:
        opened = self.body if offset == self.offset else None
        if opened is None:
            self.body.close()
        return self.router.stream(self.peer, piece, offset, opened)


@dataclass(frozen=True)
class _OriginPieces:
    """A piece from L3, holding one of the node's origin streams while it is read."""

    l3: ObjectPieces
    streams: threading.Semaphore

    def describe(self) -> str:
        return self.l3.describe()

    def read(self, piece: Piece, offset: int, chunk: int) -> Iterator[bytes]:
        with self.streams:
            yield from self.l3.read(piece, offset, chunk)
