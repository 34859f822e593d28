"""Many simulated node agents in one process, for fleet-scale tests and benchmarks.

Each simulated node runs the real Kubernetes agent (`KubeAgent`: its NodeCache watch,
its node reconciler, its pod LIST before a reload, its paced status patches) against
the real API server; only the node's disk is simulated, by `MemoryEngine`, so 500
nodes fit in one process (three threads each) instead of 500 agent processes. A
pull "downloads" in `pull_seconds`; a flip is a dict write. What the operator sees
through the API server is what 500 real agents would write.

Run as a process: `python -m modelcache.testing.simagents --kubeconfig K NODE...`
(or `--nodes-from FILE`, one name a line); it runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import cast

from modelcache.agent.engine import CacheEngine, PullProgress
from modelcache.agent.kube import KubeClient, load_kubeconfig
from modelcache.agent.kubeagent import KubeAgent
from modelcache.sources import Credentials
from modelcache.store import ModelRef

SIMULATED_VERSION_BYTES = 256 * 1024
SIMULATED_DISK_BYTES = 1 << 40


@dataclass(frozen=True)
class MemoryVersion:
    """What the node reconciler's report reads of an installed version."""

    version: str
    size: int


@dataclass(frozen=True)
class MemoryUsage:
    """What the agent's status reads of `Store.usage()`."""

    total_bytes: int
    free_bytes: int
    blob_bytes: int


@dataclass
class _Model:
    versions: dict[str, int] = field(default_factory=dict)  # version -> bytes, install order
    current: str | None = None
    pins: set[str] = field(default_factory=set)


class MemoryStore:
    """The few `Store` reads the agent makes, over a dict: one simulated node's disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[ModelRef, _Model] = {}
        self.flips: list[tuple[float, str, str]] = []  # (time.time(), model, version)

    def _model(self, model: ModelRef) -> _Model:
        return self._models.setdefault(model, _Model())

    def has_version(self, model: ModelRef, version: str) -> bool:
        with self._lock:
            return version in self._model(model).versions

    def versions(self, model: ModelRef) -> list[MemoryVersion]:
        with self._lock:
            return [MemoryVersion(v, size) for v, size in self._model(model).versions.items()]

    def current(self, model: ModelRef) -> str | None:
        with self._lock:
            return self._model(model).current

    def pins(self, model: ModelRef) -> set[str]:
        with self._lock:
            return set(self._model(model).pins)

    def models(self) -> list[ModelRef]:
        with self._lock:
            return [m for m, state in self._models.items() if state.versions]

    def usage(self) -> MemoryUsage:
        with self._lock:
            held = sum(sum(m.versions.values()) for m in self._models.values())
        return MemoryUsage(SIMULATED_DISK_BYTES, SIMULATED_DISK_BYTES - held, held)

    # -- writes (the engine's) --------------------------------------------------------------
    def install(self, model: ModelRef, version: str, size: int) -> None:
        with self._lock:
            self._model(model).versions[version] = size

    def flip(self, model: ModelRef, version: str) -> str | None:
        with self._lock:
            state = self._model(model)
            old, state.current = state.current, version
            self.flips.append((time.time(), str(model), version))
            return old

    def set_pin(self, model: ModelRef, version: str, pinned: bool) -> None:
        with self._lock:
            (self._model(model).pins.add if pinned else self._model(model).pins.discard)(version)

    def drop(self, model: ModelRef) -> list[str]:
        with self._lock:
            state = self._models.pop(model, _Model())
            return list(state.versions)


class _NoEvents:
    """The agent's event log (reload outcomes, failures): nothing to keep in a simulation."""

    def emit(self, event: object) -> None:
        pass


class MemoryEngine:
    """`CacheEngine`'s node-side operations on a `MemoryStore`: the simulated disk.

    Retention keeps everything (a simulated node holds a handful of versions)."""

    def __init__(self, pull_seconds: float = 0.0) -> None:
        self.store = MemoryStore()
        self.events = _NoEvents()
        self.pull_seconds = pull_seconds
        self._cancel = threading.Event()

    def pull(
        self,
        model: ModelRef,
        url: str,
        version: str,
        *,
        progress: PullProgress | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        if progress is not None:
            progress.start(str(model), version, SIMULATED_VERSION_BYTES, 1)
        self._cancel.wait(self.pull_seconds)
        if progress is not None:
            progress.advance(SIMULATED_VERSION_BYTES)
            progress.finish()
        self.store.install(model, version, SIMULATED_VERSION_BYTES)

    def flip(self, model: ModelRef, version: str) -> str | None:
        return self.store.flip(model, version)

    def pin(self, model: ModelRef, version: str) -> bool:
        self.store.set_pin(model, version, True)
        return True

    def unpin(self, model: ModelRef, version: str) -> bool:
        self.store.set_pin(model, version, False)
        return True

    def retain(self, model: ModelRef, keep: int, protect: Iterable[str] = ()) -> list[str]:
        return []

    def remove_model(self, model: ModelRef) -> list[str]:
        return self.store.drop(model)

    def gc(self) -> int:
        return 0

    def cancel_pulls(self) -> None:
        self._cancel.set()


@dataclass
class SimulatedNode:
    name: str
    engine: MemoryEngine
    agent: KubeAgent
    thread: threading.Thread


class SimulatedFleet:
    """`KubeAgent`s on simulated disks, one per node name, sharing one API client.

    Use as a context manager, or `start()` / `stop()`."""

    def __init__(
        self,
        kubeconfig: Path,
        nodes: Sequence[str],
        *,
        status_interval: float = 0.5,
        pull_seconds: float = 0.0,
    ) -> None:
        # Every watch holds a connection; status patches and pod LISTs need more.
        self.api = KubeClient(load_kubeconfig(kubeconfig), pool_size=2 * len(nodes) + 16)
        self.nodes: dict[str, SimulatedNode] = {}
        for name in nodes:
            engine = MemoryEngine(pull_seconds)
            agent = KubeAgent(
                self.api, name, cast(CacheEngine, engine), status_interval=status_interval
            )
            thread = threading.Thread(target=agent.run, name=f"agent {name}", daemon=True)
            self.nodes[name] = SimulatedNode(name, engine, agent, thread)

    def start(self) -> SimulatedFleet:
        for node in self.nodes.values():
            node.thread.start()
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            node.agent.request_stop()
        for node in self.nodes.values():
            node.thread.join(timeout=5)
        self.api.close()

    def current(self, node: str, model: ModelRef) -> str | None:
        """What the simulated node serves (its `current`)."""
        return self.nodes[node].engine.store.current(model)

    def __enter__(self) -> SimulatedFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run a simulated fleet until SIGTERM or Ctrl-C (a benchmark's separate process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nodes", nargs="*")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--nodes-from", type=Path, help="node names, one a line")
    parser.add_argument("--status-interval", type=float, default=0.5)
    parser.add_argument("--pull-seconds", type=float, default=0.0)
    args = parser.parse_args(argv)
    names = list(args.nodes)
    if args.nodes_from is not None:
        names += [n for n in args.nodes_from.read_text().split() if n]
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    fleet = SimulatedFleet(
        args.kubeconfig,
        names,
        status_interval=args.status_interval,
        pull_seconds=args.pull_seconds,
    ).start()
    print(f"simulating {len(names)} agents", flush=True)
    done.wait()
    fleet.stop()


if __name__ == "__main__":
    main()
