"""The peer protocol end to end, a real PeerServer and PeerClient on loopback: blobs whole
and by range, pieces from complete blobs and from a download in progress, the token
(missing, wrong, stale after a rotation), and every malformed or hostile request refused
with its status, nothing outside blobs/ reachable."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
import requests

from modelcache.fleet import (
    NODE_HEADER,
    PIECE_HEADER,
    PeerClient,
    PeerError,
    PeerRefused,
    PieceAbsent,
    PiecePending,
    TokenFile,
    bearer,
)
from tests.integration.fleet.conftest import MIB, PIECE, Peer, blob_path, rotate
from tests.waiting import wait_for

SOME = "0" * 64  # a digest nobody holds


def raw(peer: Peer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as given (no client library normalising its path)."""
    with socket.create_connection(("127.0.0.1", peer.server.server_port), timeout=20) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def get(peer: Peer, path: str, token: str | None = "", **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = bearer(token or peer.token)
    return requests.get(peer.url + path, headers=headers, timeout=20)


def test_a_blob_whole_and_by_ranges(peer: Peer) -> None:
    data = os.urandom(3 * MIB + 5)
    sha = peer.put(data)
    client = peer.client()
    assert b"".join(client.blob(sha)) == data
    assert b"".join(client.blob(sha, 1000, 70000)) == data[1000:71000]
    assert b"".join(client.blob(sha, len(data) - 10)) == data[-10:]
    assert client.holds(sha)
    suffix = get(peer, f"/v1/blobs/{sha}", Range="bytes=-7")
    assert (suffix.status_code, suffix.content) == (206, data[-7:])
    assert suffix.headers["Content-Range"] == f"bytes {len(data) - 7}-{len(data) - 1}/{len(data)}"
    assert suffix.headers[NODE_HEADER] == "node-a"
    assert peer.metric("modelcache_peer_requests_total", result="served") == 5
    # A body is counted once the server has sent it, which may be just after the client
    # has read it.
    sent = len(data) + 70000 + 10 + 1 + 7
    wait_for(lambda: peer.metric("modelcache_peer_upload_bytes_total") == sent, "the count")


def test_a_range_past_the_end_is_a_416_and_a_bad_one_a_400(peer: Peer) -> None:
    sha = peer.put(b"x" * 100)
    past = get(peer, f"/v1/blobs/{sha}", Range="bytes=100-")
    assert (past.status_code, past.headers["Content-Range"]) == (416, "bytes */100")
    assert get(peer, f"/v1/blobs/{sha}", Range="bytes=0-1,5-6").status_code == 400
    with pytest.raises(PeerError, match="answered 416"):
        peer.client().blob(sha, 100)


def test_a_piece_of_a_complete_blob(peer: Peer) -> None:
    data = os.urandom(2 * PIECE + 123)
    sha = peer.put(data)
    client = peer.client()
    assert b"".join(client.piece(sha, 1, PIECE)) == data[PIECE : 2 * PIECE]
    assert b"".join(client.piece(sha, 2, PIECE, length=123)) == data[2 * PIECE :]
    past = get(peer, f"/v1/pieces/{sha}/3?size={PIECE}")
    assert past.status_code == 416
    empty = peer.put(b"")
    assert b"".join(client.piece(empty, 0, PIECE, length=0)) == b""


def test_a_piece_in_flight_is_pending_until_verified_then_served(
    peer: Peer, tmp_path: Path
) -> None:
    """The download writes pieces out of order into its part file; a peer gets each one
    once it is verified, not before, and nothing at another piece size."""
    data = os.urandom(3 * PIECE)
    sha = hashlib.sha256(data).hexdigest()
    part = tmp_path / "part"
    with part.open("wb") as handle:
        handle.truncate(len(data))
    client = peer.client()
    with peer.in_flight.begin(sha, part, len(data), PIECE) as download:
        with pytest.raises(PiecePending):
            client.piece(sha, 1, PIECE)
        pending = get(peer, f"/v1/pieces/{sha}/1?size={PIECE}")
        assert (pending.status_code, pending.headers[PIECE_HEADER]) == (503, "pending")
        assert pending.headers["Retry-After"] == "1"
        with os.fdopen(os.open(part, os.O_WRONLY), "wb") as handle:
            handle.seek(PIECE)
            handle.write(data[PIECE : 2 * PIECE])
        download.verified(1)
        assert b"".join(client.piece(sha, 1, PIECE, length=PIECE)) == data[PIECE : 2 * PIECE]
        with pytest.raises(PiecePending):
            client.piece(sha, 0, PIECE)
        with pytest.raises(PieceAbsent):
            client.piece(sha, 0, PIECE * 2)
        assert get(peer, f"/v1/pieces/{sha}/3?size={PIECE}").status_code == 416
        assert not client.holds(sha), "a blob in flight is not a complete blob"
    with pytest.raises(PieceAbsent):
        client.piece(sha, 1, PIECE)
    assert peer.metric("modelcache_peer_requests_total", result="pending") == 3


def test_a_piece_whose_download_finished_meanwhile_comes_from_the_blob(
    peer: Peer, tmp_path: Path
) -> None:
    data = os.urandom(PIECE + 1)
    sha = hashlib.sha256(data).hexdigest()
    with peer.in_flight.begin(sha, tmp_path / "gone", len(data), PIECE) as download:
        download.verified(0)
        peer.put(data)  # the part file was renamed into blobs/
        assert b"".join(peer.client().piece(sha, 0, PIECE)) == data[:PIECE]


def test_what_is_not_held_is_a_404(peer: Peer) -> None:
    client = peer.client()
    with pytest.raises(PieceAbsent):
        client.piece(SOME, 0, PIECE)
    with pytest.raises(PieceAbsent):
        client.blob(SOME)
    assert not client.holds(SOME)
    absent = get(peer, f"/v1/pieces/{SOME}/0?size={PIECE}")
    assert (absent.status_code, absent.headers[PIECE_HEADER]) == (404, "absent")
    assert absent.headers[NODE_HEADER] == "node-a"


def test_no_token_is_a_401_and_a_wrong_one_a_403(peer: Peer) -> None:
    sha = peer.put(b"secret weights")
    anonymous = get(peer, f"/v1/blobs/{sha}", token=None)
    assert (anonymous.status_code, anonymous.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert b"secret" not in anonymous.content
    assert get(peer, f"/v1/blobs/{sha}", token="x" * 43).status_code == 403
    assert (
        get(peer, f"/v1/blobs/{sha}", None, Authorization=f"Basic {peer.token}").status_code == 403
    )
    with pytest.raises(PeerRefused, match="answered 403"):
        peer.client("y" * 43).blob(sha)
    assert peer.metric("modelcache_peer_requests_total", result="unauthorized") == 4


def test_after_a_rotation_a_stale_token_is_refused_and_the_new_one_taken(peer: Peer) -> None:
    sha = peer.put(b"weights")
    stale = peer.client()
    assert b"".join(stale.blob(sha)) == b"weights"
    rotate(peer.token_file)
    with pytest.raises(PeerRefused):
        stale.blob(sha)
    following = PeerClient("peer-a", peer.url, TokenFile(peer.token_file).current)
    assert b"".join(following.blob(sha)) == b"weights"
    rotate(peer.token_file)
    assert b"".join(following.blob(sha)) == b"weights", "it reads the token at each call"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/blobs/" + "A" * 64, 400),
        ("/v1/blobs/" + "0" * 63, 400),
        ("/v1/blobs/" + "0" * 65, 400),
        ("/v1/blobs/..", 400),
        ("/v1/blobs/%2e%2e", 400),
        ("/v1/blobs/../../../etc/passwd", 404),
        ("/v1/blobs/..%2f..%2fetc%2fpasswd", 400),
        ("/v1/pieces/../0?size=4194304", 400),
        ("/v1/blobs/" + "0" * 64 + "?x=1", 400),
        ("/v1/pieces/" + "0" * 64 + "/-1?size=4194304", 400),
        ("/v1/pieces/" + "0" * 64 + "/0", 400),
        ("/v1/pieces/" + "0" * 64 + "/0?size=4194305", 400),
        ("/v1/pieces/" + "0" * 64 + "/0?size=134217728", 400),
        ("/v1/pieces/" + "0" * 64 + "/0?size=4194304&x=1", 400),
        ("/v1/pieces/" + "0" * 64 + "/99999999999?size=4194304", 400),
        ("/etc/passwd", 404),
        ("/", 404),
    ],
)
def test_a_malformed_path_is_refused_before_any_lookup(peer: Peer, path: str, status: int) -> None:
    request = (
        f"GET {path} HTTP/1.1\r\nConnection: close\r\nAuthorization: {bearer(peer.token)}\r\n\r\n"
    )
    got, headers, body = raw(peer, request.encode())
    assert got == status, body
    assert headers[NODE_HEADER] == "node-a"
    assert b"root:" not in body


def test_only_get_is_served(peer: Peer) -> None:
    sha = peer.put(b"weights")
    auth = f"Authorization: {bearer(peer.token)}\r\n"
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        request = f"{method} /v1/blobs/{sha} HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n"
        status, headers, _ = raw(peer, request.encode())
        assert status == 405, method
        assert headers[NODE_HEADER] == "node-a"
    anonymous = f"POST /v1/blobs/{sha} HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    assert raw(peer, anonymous.encode())[0] == 401
    with_body = f"GET /v1/blobs/{sha} HTTP/1.1\r\n{auth}Content-Length: 3\r\n\r\nabc"
    assert raw(peer, with_body.encode())[0] == 413


def test_nothing_outside_blobs_is_reachable_through_what_lies_in_blobs(
    peer: Peer, tmp_path: Path
) -> None:
    """A symlink, a directory or a FIFO where a blob should be is not served (the FIFO
    without the server hanging on it); a regular blob beside them still is."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:x:0:0")
    linked = hashlib.sha256(b"root:x:0:0").hexdigest()
    blob_path(peer.blobs, linked).parent.mkdir(parents=True)
    blob_path(peer.blobs, linked).symlink_to(secret)
    directory, fifo = "d" * 64, "f" * 64
    blob_path(peer.blobs, directory).mkdir(parents=True)
    blob_path(peer.blobs, fifo).parent.mkdir(parents=True)
    os.mkfifo(blob_path(peer.blobs, fifo))
    client = peer.client()
    for sha in (linked, directory, fifo):
        with pytest.raises(PieceAbsent):
            client.blob(sha)
        with pytest.raises(PieceAbsent):
            client.piece(sha, 0, PIECE)
    kept = peer.put(b"a real blob")
    assert b"".join(client.blob(kept)) == b"a real blob"


def test_the_client_reports_a_peer_not_listening_as_not_serving_yet(tmp_path: Path) -> None:
    """A closed port is an agent still starting: absent (the route waits for it within the
    grace, as for a node not pulling yet), not a dead peer avoided for the whole file.
    A peer that accepts and then fails is unreachable (test_client_against_bad_peers)."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    client = PeerClient("gone", f"http://127.0.0.1:{port}", "t" * 43)
    with pytest.raises(PieceAbsent, match="peer gone: not serving yet"):
        client.piece(SOME, 0, PIECE)
    with pytest.raises(ValueError, match="not a sha256"):
        client.piece("../etc", 0, PIECE)
