"""A peer server in a process of its own, so a test can read that process's memory:
`python -m tests.integration.fleet.peer_process BLOBS TOKEN_FILE` prints its port and
serves blobs/ (laid out as the store's) until its stdin closes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from modelcache.fleet import InFlight, PeerServer, TokenFile


def main() -> None:
    blobs, token_file = Path(sys.argv[1]), Path(sys.argv[2])

    def locate(sha256: str) -> Path | None:
        path = blobs / "sha256" / sha256[:2] / sha256
        return path if os.path.lexists(path) else None

    server = PeerServer(
        node="measured",
        tokens=TokenFile(token_file),
        locate=locate,
        in_flight=InFlight(),
        registry=CollectorRegistry(),
    ).start()
    print(server.server_port, flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
