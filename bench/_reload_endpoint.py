"""An inference pod's reload endpoint for the benchmarks: it answers every reload ok at
once and notes when each arrived, so a bench times the agent, not a runtime."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_REQUEST = 64 * 1024


class PodServer(ThreadingHTTPServer):
    """One pod's reload endpoint; `received` holds (arrival time.time(), version) per call."""

    received: list[tuple[float, str]]

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, ReloadHandler)
        self.received = []


class ReloadHandler(BaseHTTPRequestHandler):
    server: PodServer

    def do_POST(self) -> None:
        arrived = time.time()
        length = min(int(self.headers.get("Content-Length", "0")), MAX_REQUEST)
        body = json.loads(self.rfile.read(length))
        self.server.received.append((arrived, body["version"]))
        data = json.dumps({"ok": True, "live_version": body["version"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass
