"""The reload endpoint: POST {"model", "version"} -> load what `current` names -> the verdict.

The call is a nudge, not an instruction: whoever calls, the pod loads only what the
node's read-only `current` link names for that model, under the runtime's `root` (a
`path` in the call is ignored). So the worst an unauthenticated caller on the pod
network can do is make the pod re-read what is already live, and that is bounded too:
one reload at a time per model (429 while one runs) and RELOADS_PER_SECOND overall.

One transport-free core (`ReloadService.handle`) and two thin transports over it: a
stdlib HTTP server on a thread (`ReloadServer`, for a pod with no web framework) and a
plain ASGI callable (`asgi_app`, to mount in an existing FastAPI/Starlette/any ASGI app
without this package depending on one). Answers, as `modelcache.agent.reload` reads them:
200 {"ok": true, "live_version", "timings": {read_s, verify_s, stage_s, swap_s, ...}};
409 {"ok": false, "reason", "live_version"} when a version is refused (the live one
stays), or when `current` names another version than the call expected; 500
{"ok": false, "kind": "torn", ...} when the copy itself failed partway (requests are
refused until a swap succeeds); 400 for a malformed call, 404 for a model this pod
does not serve, 429 while busy.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from modelcache.api import ReloadAnswer, ReloadRequest
from modelcache.problems import one_line
from modelcache.runtime.errors import SwapRefused, TornWeightsError
from modelcache.runtime.runtime import LoraRuntime
from modelcache.serving import (
    HEADER_TIMEOUT_S,
    MAX_BODY,
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT_S,
    BoundedHandler,
    BoundedHTTPServer,
)

RELOAD_PATH = "/modelcache/reload"
STATUS_PATH = "/modelcache/status"
METRICS_PATH = "/metrics"

Answer = tuple[int, dict[str, Any]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _refusal(reason: str, *, kind: str | None = None, live: str | None = None) -> dict[str, Any]:
    return ReloadAnswer.refused(reason, kind=kind, live=live).to_wire()


class _Bucket:
    """At most `rate` calls a second on average, bursts of `rate`: non-blocking."""

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, rate, time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


RELOADS_PER_SECOND = 10.0


class ReloadService:
    """The runtimes this pod serves, by model name, and the reload call's semantics."""

    def __init__(
        self, runtimes: Iterable[LoraRuntime], *, reloads_per_second: float = RELOADS_PER_SECOND
    ) -> None:
        self.runtimes = {runtime.name: runtime for runtime in runtimes}
        for runtime in self.runtimes.values():
            if runtime.config.root is None:
                raise ValueError(
                    f"{runtime.name}: a reload endpoint needs RuntimeConfig.root (the node's "
                    "cache, mounted read-only): the pod loads only what its `current` names"
                )
        self._busy = {name: threading.Lock() for name in self.runtimes}
        self._bucket = _Bucket(reloads_per_second)

    def handle(self, body: bytes) -> Answer:
        """Parse, swap, answer; never raises."""
        try:
            call = ReloadRequest.model_validate_json(body)
        except ValidationError as error:
            if any(e["type"] == "json_invalid" for e in error.errors()):
                return 400, _refusal(f"body is not JSON: {one_line(error)}")
            return 400, _refusal(f'expected {{"model", "version"}}: {one_line(error)}')
        runtime = self.runtimes.get(call.model)
        if runtime is None:
            return 404, _refusal(f"this pod serves {sorted(self.runtimes)}, not {call.model!r}")
        busy = self._busy[call.model]
        if not self._bucket.take() or not busy.acquire(blocking=False):
            return 429, _refusal("reload calls come too fast, or one is running: retry soon")
        try:
            result = runtime.reload_current()
        except TornWeightsError as torn:
            return 500, _refusal(str(torn), kind="torn")
        except SwapRefused as refusal:
            return 409, _refusal(refusal.reason, kind=refusal.kind, live=runtime.live_version)
        finally:
            busy.release()
        if result.version != call.version:
            reason = f"`current` names {result.version!r}, not {call.version!r}: that is live"
            return 409, _refusal(reason, kind="current", live=result.version)
        return 200, result.answer().to_wire()

    def status(self) -> dict[str, Any]:
        return {
            "models": {
                name: {
                    "live_version": rt.live_version,
                    "in_flight": rt.controller.in_flight,
                    "torn": rt.controller.torn,
                }
                for name, rt in self.runtimes.items()
            }
        }

    def metrics(self) -> bytes:
        registries = {id(rt.metrics.registry): rt.metrics.registry for rt in self.runtimes.values()}
        return b"".join(generate_latest(r) for r in registries.values())


class _Handler(BoundedHandler):
    server: ReloadServer

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path != self.server.reload_path:
            self.send_json(404, {"ok": False, "reason": f"POST {self.server.reload_path}"})
            return
        body = self.read_body()
        if body is not None:
            self.send_json(*self.server.service.handle(body))

    def do_GET(self) -> None:  # noqa: N802
        if self.path == METRICS_PATH:
            self.send_bytes(200, self.server.service.metrics(), CONTENT_TYPE_LATEST)
        elif self.path == STATUS_PATH:
            self.send_json(200, self.server.service.status())
        else:
            self.send_json(404, {"ok": False, "reason": f"no {self.path}"})


class ReloadServer(BoundedHTTPServer):
    """`with ReloadServer(service, port=8000) as server:` serves on a daemon thread; bounded
    (connections, time to send a whole request, body size: modelcache/serving/httpserver.py)."""

    def __init__(
        self,
        service: ReloadService,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - the agent calls the pod by its IP
        port: int = 8000,
        reload_path: str = RELOAD_PATH,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        super().__init__(
            (host, port),
            _Handler,
            max_connections=max_connections,
            header_timeout=header_timeout,
            request_timeout=request_timeout,
        )
        self.service = service
        self.reload_path = reload_path
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str | None = None) -> str:
        host = str(self.server_address[0])
        return f"http://{host}:{self.port}{path or self.reload_path}"

    def start(self) -> ReloadServer:
        self._thread = threading.Thread(target=self.serve_forever, name="reload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ReloadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def asgi_app(service: ReloadService) -> ASGIApp:
    """An ASGI callable: POST -> reload, GET -> status. Mount it at the reload path.

    The swap runs in a worker thread: it may wait for requests in flight on this very
    event loop to drain, which they could not do if the loop were blocked."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        if method == "GET":
            await _asgi_json(send, 200, service.status())
            return
        if method != "POST":
            await _asgi_json(send, 405, {"ok": False, "reason": "POST a reload call"})
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _asgi_json(send, 413, {"ok": False, "reason": f"body over {MAX_BODY} bytes"})
                return
            if not message.get("more_body", False):
                break
        status, answer = await asyncio.to_thread(service.handle, body)
        await _asgi_json(send, status, answer)

    return app


async def _asgi_json(send: Send, status: int, answer: dict[str, Any]) -> None:
    body = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
