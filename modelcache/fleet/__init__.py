"""The fleet: nodes serving each other what they hold, so a version reaches a thousand
nodes without a thousand downloads from L3.

- `rank`/`piece_key`: which nodes to ask for a piece, in the same order on every node;
- `TokenFile`: the peer credential, a bearer token from a file, re-read on rotation;
- `InFlight`: the blobs this node is downloading and their verified pieces;
- `PeerServer`: serves complete blobs and verified pieces, bounded, authenticated;
- `PeerClient`: takes a piece or a range of a blob from one peer, bounded.

Imports api, fs, problems and serving of modelcache, nothing above.
"""

from modelcache.fleet.auth import (
    MAX_TOKEN_FILE,
    MIN_TOKEN_CHARS,
    TokenError,
    TokenFile,
    bearer,
    new_token,
    read_token,
)
from modelcache.fleet.client import (
    Body,
    PeerBusy,
    PeerClient,
    PeerError,
    PeerMisbehaved,
    PeerRefused,
    PeerUnreachable,
    PieceAbsent,
    PiecePending,
)
from modelcache.fleet.holdings import BlobLocator, Holding, InFlight, InFlightBlob
from modelcache.fleet.ranges import BadRange, ByteRange, Unsatisfiable, parse_range
from modelcache.fleet.rendezvous import piece_key, rank, weight
from modelcache.fleet.server import (
    MAX_PIECE_SIZE,
    MAX_UPLOADS,
    MIN_PIECE_SIZE,
    NODE_HEADER,
    PIECE_HEADER,
    VERIFIED_HEADER,
    PeerBounds,
    PeerServer,
    TokenChecker,
    open_regular,
)

__all__ = [
    "MAX_PIECE_SIZE",
    "MAX_TOKEN_FILE",
    "MAX_UPLOADS",
    "MIN_PIECE_SIZE",
    "MIN_TOKEN_CHARS",
    "NODE_HEADER",
    "PIECE_HEADER",
    "VERIFIED_HEADER",
    "BadRange",
    "BlobLocator",
    "Body",
    "ByteRange",
    "Holding",
    "InFlight",
    "InFlightBlob",
    "PeerBounds",
    "PeerBusy",
    "PeerClient",
    "PeerError",
    "PeerMisbehaved",
    "PeerRefused",
    "PeerServer",
    "PeerUnreachable",
    "PieceAbsent",
    "PiecePending",
    "TokenChecker",
    "TokenError",
    "TokenFile",
    "Unsatisfiable",
    "bearer",
    "new_token",
    "open_regular",
    "parse_range",
    "piece_key",
    "rank",
    "read_token",
    "weight",
]
