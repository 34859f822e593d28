"""The studio's inference service: generations over HTTP, the LoRA swapped by modelcache.

Routes (one port, bounded stdlib HTTP server, a thread per whole request):
    POST /generate            {"seed": int, "steps": int?, "return_image": bool?}
                              -> {"version", "seed", "steps", "seconds", "image_sha256", "stats"}
    GET  /healthz             liveness, with the live version and the last reload
    GET  /readyz              200 once an adapter version is live (503 before)
    GET  /metrics             Prometheus: the runtime's metrics and the studio's
    POST /modelcache/reload   what the modelcache agent calls: {"model", "version", "path"}
    GET  /modelcache/status   the runtime's status
A whole generation, every denoising step, runs inside one `runtime.request()`: it sees
one adapter version from start to end, and a swap waits for it at the boundary.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from examples.studio.model import (
    StudioConfig,
    build_model,
    generate,
    image_sha256,
    image_stats,
)
from modelcache.runtime import (
    CurrentWatcher,
    LoraRuntime,
    ReloadService,
    RuntimeConfig,
    TornWeightsError,
    watch_current,
)
from modelcache.serving import BoundedHandler, BoundedHTTPServer

log = logging.getLogger("examples.studio")

RELOAD_PATH = "/modelcache/reload"
STATUS_PATH = "/modelcache/status"


class BadRequestError(Exception):
    """A client error: answered 400 with this message."""


class NoAdapterError(Exception):
    """No version is live and the server was not told to serve the bare base model."""


@dataclass(frozen=True)
class Generation:
    version: str | None
    seed: int
    steps: int
    seconds: float
    image: torch.Tensor

    def to_json(self, *, with_image: bool = False) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "version": self.version,
            "seed": self.seed,
            "steps": self.steps,
            "seconds": round(self.seconds, 6),
            "image_sha256": image_sha256(self.image),
            "shape": list(self.image.shape),
            "stats": image_stats(self.image),
        }
        if with_image:
            answer["image"] = self.image.tolist()
        return answer


class Studio:
    """The model, its LoRA runtime and the reload service, without any transport."""

    def __init__(
        self,
        config: StudioConfig,
        *,
        model_name: str = "studio/sdxl",
        root: Path | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        allow_base: bool = False,
    ) -> None:
        self.config = config
        self.device = device
        self.allow_base = allow_base
        self.registry = CollectorRegistry()
        self.model = build_model(config, device=device, dtype=dtype)
        self.runtime = LoraRuntime(
            self.model, RuntimeConfig(model=model_name, root=root), registry=self.registry
        )
        self.reloads = ReloadService([self.runtime])
        self.last_reload: dict[str, Any] | None = None
        self.watcher: CurrentWatcher | None = None
        self._generations = Counter(
            "studio_generations_total",
            "Generations served, by the adapter version they ran on",
            ["version"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "studio_generation_seconds",
            "Wall time of one generation, all denoising steps",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def live_version(self) -> str | None:
        return self.runtime.live_version

    def generate(self, seed: int, steps: int | None = None) -> Generation:
        steps = self.config.steps if steps is None else steps
        if not 1 <= steps <= self.config.max_steps:
            raise BadRequestError(f"steps must be within 1..{self.config.max_steps}, got {steps}")
        started = time.perf_counter()
        with self.runtime.request() as version:  # one version for every step
            if version is None and not self.allow_base:
                raise NoAdapterError(f"no {self.name} adapter version is live yet")
            image = generate(self.model, seed=seed, steps=steps)
        seconds = time.perf_counter() - started
        self._generations.labels(str(version)).inc()
        self._seconds.observe(seconds)
        result = Generation(version, seed, steps, seconds, image)
        log.info(
            json.dumps(
                {
                    "event": "GENERATE",
                    "model": self.name,
                    "version": version,
                    "seed": seed,
                    "steps": steps,
                    "seconds": round(seconds, 4),
                    "device": self.device,
                    "image_sha256": image_sha256(image)[:16],
                }
            )
        )
        return result

    def reload(self, body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = self.reloads.handle(body)
        self.last_reload = {"status": status, **answer}
        return status, answer

    def watch(self, current: Path, *, interval_s: float = 1.0) -> CurrentWatcher:
        """Follow the `current` symlink (standalone use, no agent calling the reload route)."""
        self.watcher = watch_current(self.runtime, current, interval_s=interval_s)
        return self.watcher

    def health(self) -> dict[str, Any]:
        watching = None
        if self.watcher is not None:
            error = self.watcher.last_error
            watching = {
                "current": str(self.watcher.current),
                "last_error": error.reason if error is not None else None,
            }
        return {
            "ok": True,
            "model": self.name,
            "live_version": self.live_version,
            "device": self.device,
            "config": self.config.to_dict(),
            "last_reload": self.last_reload,
            "watching": watching,
        }

    def metrics(self) -> bytes:
        return generate_latest(self.registry)


def parse_generate(body: bytes) -> tuple[int, int | None, bool]:
    try:
        call = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequestError(f"body is not JSON: {error}") from None
    if not isinstance(call, dict):
        raise BadRequestError('expected {"seed": int, "steps": int?}')
    unknown = sorted(set(call) - {"seed", "steps", "return_image"})
    if unknown:
        raise BadRequestError(f"unknown fields {unknown}")
    seed, steps, with_image = call.get("seed", 0), call.get("steps"), call.get("return_image")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise BadRequestError(f"seed must be an integer in 0..2^63-1, got {seed!r}")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)):
        raise BadRequestError(f"steps must be an integer, got {steps!r}")
    if with_image is not None and not isinstance(with_image, bool):
        raise BadRequestError(f"return_image must be true or false, got {with_image!r}")
    return seed, steps, bool(with_image)


class _Handler(BoundedHandler):
    server: StudioServer

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        routes: dict[str, Callable[[bytes], tuple[int, dict[str, Any]]]] = {
            "/generate": self._generate,
            RELOAD_PATH: self.server.studio.reload,
        }
        route = routes.get(self.path)
        if route is None:
            self.send_json(404, {"ok": False, "reason": f"no POST {self.path}"})
            return
        body = self.read_body()
        if body is not None:
            self.send_json(*route(body))

    def _generate(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            seed, steps, with_image = parse_generate(body)
            generation = self.server.studio.generate(seed, steps)
        except BadRequestError as error:
            return 400, {"ok": False, "reason": str(error)}
        except (NoAdapterError, TornWeightsError) as error:
            return 503, {"ok": False, "reason": str(error), "version": None}
        return 200, {"ok": True, **generation.to_json(with_image=with_image)}

    def do_GET(self) -> None:  # noqa: N802
        studio = self.server.studio
        if self.path == "/metrics":
            self.send_bytes(200, studio.metrics(), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            self.send_json(200, studio.health())
        elif self.path == "/readyz":
            live = studio.live_version
            torn = studio.runtime.controller.torn  # a failed copy: not ready until a swap works
            ready = torn is None and (live is not None or studio.allow_base)
            self.send_json(200 if ready else 503, {"ok": ready, "live_version": live})
        elif self.path == STATUS_PATH:
            self.send_json(200, {**studio.reloads.status(), "last_reload": studio.last_reload})
        else:
            self.send_json(404, {"ok": False, "reason": f"no GET {self.path}"})


class StudioServer(BoundedHTTPServer):
    """`StudioServer(studio, port=8000).start()` serves on a daemon thread; `.stop()`.
    Bounded like the reload server (modelcache/serving/httpserver.py)."""

    def __init__(self, studio: Studio, *, host: str = "0.0.0.0", port: int = 8000) -> None:  # noqa: S104
        super().__init__((host, port), _Handler)
        self.studio = studio
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "") -> str:
        host = str(self.server_address[0])
        host = "127.0.0.1" if host == "0.0.0.0" else host  # noqa: S104
        return f"http://{host}:{self.port}{path}"

    def start(self) -> StudioServer:
        self._thread = threading.Thread(target=self.serve_forever, name="studio", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()
        if self.studio.watcher is not None:
            self.studio.watcher.stop()
