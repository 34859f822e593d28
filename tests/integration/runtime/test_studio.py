"""Acceptance for examples/studio: the studio server in its own process, driven over HTTP.

The standalone agent pulls adapter versions made by the studio's adapters tool, flips and
calls the studio's reload route; every generation reports the version it ran on, and its
image must equal (sha256 of the float32 pixels) that of a freshly built studio model with
that version's adapter written straight into it, in this process, without the runtime.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from examples.studio import adapters
from examples.studio.model import StudioConfig, apply_adapter, build_model, generate, image_sha256
from modelcache.agent.standalone import StandaloneAgent
from modelcache.api.names import ModelRef
from modelcache.sources import open_source, publish
from modelcache.store import Store
from modelcache.testing.ports import free_port
from modelcache.testing.process import ManagedProcess
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[3]
NAME = "studio/sdxl"
CONFIG = StudioConfig()
# v3's rank is above the slots' (16): a version the runtime must refuse.
VERSIONS = {"v1": (1, 8), "v2": (2, 4), "v3": (3, 32)}


class Studio:
    """The studio server as a pod runs it: `python -m examples.studio`, stopped by its PID."""

    def __init__(self, work: Path, root: Path) -> None:
        self.port = free_port()
        self.process = ManagedProcess(
            "studio",
            [
                sys.executable,
                "-m",
                "examples.studio",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--model",
                NAME,
                "--root",
                str(root),
            ],
            log_path=work / "studio.log",
            cwd=REPO,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Studio:
        self.process.start()

        def up() -> bool:
            reason = self.process.exit_reason()
            assert reason is None, reason
            try:
                return requests.get(self.url("/healthz"), timeout=5).ok
            except requests.ConnectionError:
                return False

        wait_for(up, "the studio to listen")
        return self

    def generate(self, seed: int, steps: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"seed": seed} if steps is None else {"seed": seed, "steps": steps}
        response = requests.post(self.url("/generate"), json=body, timeout=60)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = requests.get(self.url("/healthz"), timeout=10).json()
        return answer

    def live(self) -> str | None:
        live: str | None = self.health()["live_version"]
        return live


@pytest.fixture
def made(tmp_path: Path) -> dict[str, Path]:
    """Each version's files, written by the studio's adapters tool."""
    made = {}
    for version, (seed, rank) in VERSIONS.items():
        out = tmp_path / "made" / version
        code = adapters.main([str(out), "--seed", str(seed), "--rank", str(rank)])
        assert code == 0
        made[version] = out
    return made


@pytest.fixture
def bucket(tmp_path: Path, made: dict[str, Path]) -> str:
    directory = tmp_path / "bucket"
    directory.mkdir()
    url = f"file://{directory}"
    source = open_source(url)
    for version, files in made.items():
        publish(source, files, version)
    return url


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Studio]:
    server = Studio(tmp_path, tmp_path / "cache")
    try:
        yield server.start()
    finally:
        server.process.stop()


class Agent:
    """The standalone agent on a thread, its desired state in a YAML file we rewrite."""

    def __init__(self, work: Path, bucket: str, reload_url: str, **model: Any) -> None:
        self.path = work / "node.yaml"
        self.config: dict[str, Any] = {
            "root": str(work / "cache"),
            "node": "gpu-01",
            "poll_seconds": 0.1,
            "resync_seconds": 1,
            "models": [{"name": NAME, "source": bucket, "reload": [reload_url], **model}],
        }
        self.path.write_text(yaml.safe_dump(self.config))
        self.agent = StandaloneAgent(self.path, stdout_events=False)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)

    def use(self, version: str) -> None:
        self.config["models"][0]["version"] = version
        self.path.write_text(yaml.safe_dump(self.config))

    def __enter__(self) -> Agent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.agent.stop.set()
        self.thread.join(timeout=30)


class References:
    """Generations of freshly built studio models, one per version, loaded without the runtime."""

    def __init__(self, made: dict[str, Path]) -> None:
        self.made = made
        self.models: dict[str, Any] = {}
        self.digests: dict[tuple[str, int, int], str] = {}

    def digest(self, version: str, seed: int, steps: int = CONFIG.steps) -> str:
        key = (version, seed, steps)
        if key not in self.digests:
            if version not in self.models:
                self.models[version] = apply_adapter(build_model(CONFIG), self.made[version])
            image = generate(self.models[version], seed=seed, steps=steps)
            self.digests[key] = image_sha256(image)
        return self.digests[key]


def test_agent_flips_studio_generates_on_the_live_version(
    tmp_path: Path, made: dict[str, Path], bucket: str, studio: Studio
) -> None:
    references = References(made)
    base = image_sha256(generate(build_model(CONFIG), seed=11, steps=CONFIG.steps))
    # Without an adapter the studio refuses rather than serving the bare base model.
    refused = requests.post(studio.url("/generate"), json={"seed": 11}, timeout=30)
    assert refused.status_code == 503, refused.text
    assert requests.get(studio.url("/readyz"), timeout=10).status_code == 503

    with Agent(tmp_path, bucket, studio.url("/modelcache/reload"), version="v1") as agent:
        wait_for(lambda: studio.live() == "v1", "the studio to report v1")
        answer = studio.generate(11)
        assert answer["version"] == "v1"
        assert answer["image_sha256"] == references.digest("v1", 11)
        assert answer["image_sha256"] != base  # the adapter changed the image

        agent.use("v2")
        wait_for(lambda: studio.live() == "v2", "the studio to report v2")
        for seed, steps in ((11, None), (12, 7)):
            answer = studio.generate(seed, steps)
            assert answer["version"] == "v2"
            assert answer["steps"] == (steps or CONFIG.steps)
            assert answer["image_sha256"] == references.digest("v2", seed, steps or CONFIG.steps)
        assert references.digest("v2", 11) != references.digest("v1", 11)
        last = studio.health()["last_reload"]
        assert last["ok"] is True
        assert last["live_version"] == "v2"
        assert last["previous_version"] == "v1"
        assert set(last["timings"]) >= {"read_s", "verify_s", "stage_s", "swap_s", "total_s"}

        # v3 is flipped on disk, then refused by the studio: generations stay on v2.
        agent.use("v3")
        current = tmp_path / "cache/models/studio/sdxl/current"
        wait_for(lambda: current.resolve().name == "v3", "the flip to v3")

        def refused_v3() -> bool:
            last = studio.health()["last_reload"]
            return bool(last and last["status"] == 409)

        wait_for(refused_v3, "the studio to refuse v3")
        last = studio.health()["last_reload"]
        assert last["kind"] == "rank"
        assert "exceeds slot rank 16" in last["reason"]
        assert last["live_version"] == "v2"
        answer = studio.generate(11)
        assert answer["version"] == "v2"
        assert answer["image_sha256"] == references.digest("v2", 11)

        # Rollback: the cached v1 is back, bit for bit.
        agent.use("v1")
        wait_for(lambda: studio.live() == "v1", "the rollback to v1")
        answer = studio.generate(11)
        assert answer["version"] == "v1"
        assert answer["image_sha256"] == references.digest("v1", 11)

    metrics = requests.get(studio.url("/metrics"), timeout=10).text
    assert 'modelcache_runtime_swap_failures_total{model="studio/sdxl",reason="rank"}' in metrics
    assert 'modelcache_runtime_live_version{model="studio/sdxl",version="v1"} 1.0' in metrics
    assert 'studio_generations_total{version="v2"} 3.0' in metrics


def test_generations_during_swaps_each_see_one_version(
    tmp_path: Path, made: dict[str, Path], bucket: str, studio: Studio
) -> None:
    references = References(made)
    root = tmp_path / "cache"
    # The agent pulls v1 (live) and v2 (prefetched), then we swap as the agent does (flip
    # `current`, call the reload route) ourselves, as fast as it answers, while clients
    # keep generating.
    reload_url = studio.url("/modelcache/reload")
    with Agent(tmp_path, bucket, reload_url, version="v1", prefetch=["v2"]):
        wait_for(lambda: studio.live() == "v1", "the studio to report v1")
        # The prefetch goes on in the background (the flip to v1 did not wait for it).
        prefetched = root / "models/studio/sdxl/versions/v2/adapter_model.safetensors"
        wait_for(prefetched.is_file, "v2 prefetched")

    seeds, steps = (21, 22, 23), 30
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client(index: int) -> None:
        try:
            n = 0
            while not stop.is_set():
                results.append(studio.generate(seeds[(index + n) % len(seeds)], steps))
                n += 1
        except BaseException as error:
            errors.append(error)

    def more_than(count: int) -> Callable[[], bool]:
        return lambda: len(results) > count

    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
    for thread in clients:
        thread.start()
    swaps: list[dict[str, Any]] = []
    store = Store(root)
    try:
        wait_for(lambda: len(results) >= 3, "the first generations")
        for n in range(12):
            version = ("v2", "v1")[n % 2]
            store.flip(ModelRef.parse(NAME), version)
            body = {"model": NAME, "version": version}
            response = requests.post(reload_url, json=body, timeout=60)
            assert response.status_code == 200, response.text
            swaps.append(response.json())
            wait_for(more_than(len(results) + 1), "generations after a swap")
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
    assert not errors, errors

    assert [s["live_version"] for s in swaps] == ["v2", "v1"] * 6
    seen = {r["version"] for r in results}
    assert seen == {"v1", "v2"}
    for result in results:
        want = references.digest(result["version"], result["seed"], steps)
        assert result["image_sha256"] == want, (
            f"a generation reported {result['version']} but its image is not that version's "
            f"(seed {result['seed']}): it saw another version for some of its steps"
        )
    # The swaps did land while generations were running (they had to wait for them).
    assert max(s["timings"]["drain_s"] for s in swaps) > 0.005
