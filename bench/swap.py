"""L1 swap: latency and device memory of in-place LoRA swaps, beside reload-by-reallocation.

modelcache: `LoraRuntime.swap` reads the version, checks its sha256, validates it, stages
it into a (pinned) host mirror, then copies it into the resident slots at a request
boundary. Baseline, in the same run on the same model shape and files: what a pod does
without resident slots, `safetensors.torch.load_file(device=...)` and rebinding every
layer's tensors (fresh allocations each time, the old ones freed by the allocator).

Two parts, each run for both: latency with a large adapter (the case's 1.2 GB), and
endurance (many swaps of a smaller adapter while requests run in threads, every request
checked against the reference output of the version it reports).

    python bench/swap.py                      # CPU: small sizes
    python bench/swap.py --device cuda        # GPU: 1.2 GB latency, 1000-swap endurance
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from safetensors.torch import load, load_file
from torch import nn

from modelcache.api.manifest import MANIFEST_NAME, Manifest, ManifestFile
from modelcache.fs import hash_file
from modelcache.runtime import LoraLinear, LoraRuntime, RuntimeConfig, write_safetensors

console = Console()
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ALPHA = 32.0


class LoraStack(nn.Module):
    """`layers` LoraLinear(dim, dim) side by side; a request sums their outputs (stable)."""

    def __init__(self, layers: int, dim: int, rank: int, dtype: torch.dtype, device: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(
            LoraLinear(dim, dim, max_rank=rank, device=device, dtype=dtype) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for layer in self.layers:
            out += layer(x)
        return out


@dataclass(frozen=True)
class Shape:
    layers: int
    dim: int
    rank: int
    dtype: torch.dtype

    @classmethod
    def for_size(cls, mib: float, dim: int, rank: int, dtype: torch.dtype) -> Shape:
        per_layer = 2 * dim * rank * dtype.itemsize
        return cls(max(1, round(mib * 2**20 / per_layer)), dim, rank, dtype)

    @property
    def lora_bytes(self) -> int:
        return self.layers * 2 * self.dim * self.rank * self.dtype.itemsize

    def build(self, device: str) -> LoraStack:
        return LoraStack(self.layers, self.dim, self.rank, self.dtype, device).eval()


def write_version(root: Path, shape: Shape, version: str, seed: int) -> Path:
    """A version directory as L2 holds it: PEFT-named adapter, its config, a manifest."""
    directory = root / "versions" / version
    directory.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    scale = shape.dim**-0.5
    tensors = {}
    for index in range(shape.layers):
        prefix = f"base_model.model.layers.{index}"
        a = torch.randn(shape.rank, shape.dim, generator=generator) * scale
        b = torch.randn(shape.dim, shape.rank, generator=generator) * scale
        tensors[f"{prefix}.lora_A.weight"] = a.to(shape.dtype)
        tensors[f"{prefix}.lora_B.weight"] = b.to(shape.dtype)
    write_safetensors(directory / "adapter_model.safetensors", tensors)
    config = {
        "peft_type": "LORA",
        "r": shape.rank,
        "lora_alpha": ALPHA,
        "target_modules": r"layers\.\d+",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    entries = []
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        digest = hash_file(directory / name)
        entries.append(
            ManifestFile(path=name, size=digest.size, sha256=digest.sha256, crc64=str(digest.crc64))
        )
    created = dt.datetime.now(dt.UTC)
    manifest = Manifest(version=version, created=created, files=tuple(entries))
    (directory / MANIFEST_NAME).write_bytes(manifest.to_json())
    return directory


def rebind(model: LoraStack, directory: Path, device: str, rank: int) -> None:
    """The baseline reload: new tensors straight from the file onto the device, rebound."""
    path = directory / "adapter_model.safetensors"
    if device.startswith("cuda"):
        tensors = load_file(str(path), device=device)
    else:  # load_file would mmap, deferring the read to the first request: read it now
        tensors = load(path.read_bytes())
    for index, layer in enumerate(model.layers):
        assert isinstance(layer, LoraLinear)
        prefix = f"base_model.model.layers.{index}"
        layer.lora_A = tensors[f"{prefix}.lora_A.weight"]
        layer.lora_B = tensors[f"{prefix}.lora_B.weight"]
        layer.lora_scaling.fill_(ALPHA / rank)


def free(device: str) -> None:
    """Hand cached blocks back between phases, so each phase starts from the same place."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Memory:
    """Device memory figures around a phase (allocator segments = cudaMalloc calls)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.before: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        if not self.cuda:
            return {}
        sync("cuda")
        stats = torch.cuda.memory_stats()
        return {
            "reserved_mib": torch.cuda.memory_reserved() / 2**20,
            "allocated_mib": torch.cuda.memory_allocated() / 2**20,
            "segments": float(stats.get("segment.all.allocated", 0)),
            "retries": float(stats.get("num_alloc_retries", 0)),
        }

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.before = self.snapshot()

    def report(self) -> dict[str, float]:
        after = self.snapshot()
        if not after:
            return {}
        return {
            "reserved_before_mib": self.before["reserved_mib"],
            "reserved_after_mib": after["reserved_mib"],
            "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
            "new_segments": after["segments"] - self.before["segments"],
            "alloc_retries": after["retries"] - self.before["retries"],
        }


@dataclass
class Requests:
    """Threads sending requests during swaps; each output is matched to the references."""

    run_one: Callable[[torch.Tensor], tuple[str | None, torch.Tensor]]
    references: dict[str, torch.Tensor]
    x: torch.Tensor
    threads: int
    served: int = 0
    failed: int = 0
    mixed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                version, out = self.run_one(self.x)
            except Exception as error:  # a failed request is what we count
                with self._lock:
                    self.failed += 1
                    self.errors.append(repr(error))
                continue
            ok = version in self.references and self.matches(out, version)
            with self._lock:
                self.served += 1
                self.mixed += not ok

    def matches(self, out: torch.Tensor, version: str) -> bool:
        """Closest reference is the reported version's, and it is close (not a mixture)."""
        out = out.float().cpu()
        distances = {v: (out - ref).abs().max().item() for v, ref in self.references.items()}
        nearest = min(distances, key=distances.__getitem__)
        spread = min(d for v, d in distances.items() if v != nearest) if len(distances) > 1 else 1
        return nearest == version and distances[nearest] <= 1e-3 * max(spread, 1e-6)

    @contextmanager
    def running(self) -> Iterator[None]:
        workers = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            self._stop.set()
            for worker in workers:
                worker.join()


def references(shape: Shape, dirs: dict[str, Path], device: str, x: torch.Tensor) -> dict[str, Any]:
    """Each version's output from a model that only ever held that version."""
    model = shape.build(device)
    found = {}
    with torch.no_grad():
        for version, directory in dirs.items():
            rebind(model, directory, device, shape.rank)
            found[version] = model(x).float().cpu()
    del model
    free(device)
    return found


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def p95_ms(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000


def latency(shape: Shape, work: Path, device: str, swaps: int) -> dict[str, dict[str, float]]:
    dirs = {v: write_version(work, shape, v, seed) for seed, v in enumerate(["v1", "v2"], 1)}
    order = [("v1", "v2")[i % 2] for i in range(swaps + 1)]
    figures: dict[str, dict[str, float]] = {}

    model = shape.build(device)
    runtime = LoraRuntime(model, RuntimeConfig(model="bench/lora", root=work))
    runtime.swap("v1", dirs["v1"])  # warm: first-touch of the pinned mirror, CUDA context
    memory = Memory(device)
    memory.start()
    results = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("modelcache swaps", total=swaps)
        for version in order[1:]:
            results.append(runtime.swap(version, dirs[version]).timings)
            progress.advance(task)
    figures["modelcache"] = {
        "blocking_ms": median_ms([t["swap_s"] for t in results]),
        "blocking_p95_ms": p95_ms([t["swap_s"] for t in results]),
        "total_ms": median_ms([t["total_s"] for t in results]),
        "verify_ms": median_ms([t["verify_s"] for t in results]),
        "stage_ms": median_ms([t["stage_s"] for t in results]),
        "copy_gb_s": shape.lora_bytes / statistics.median(t["swap_s"] for t in results) / 1e9,
        **memory.report(),
    }
    del runtime, model
    free(device)

    model = shape.build(device)
    rebind(model, dirs["v1"], device, shape.rank)
    memory.start()
    seconds = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("baseline reloads", total=swaps)
        for version in order[1:]:
            started = time.perf_counter()
            rebind(model, dirs[version], device, shape.rank)
            sync(device)
            seconds.append(time.perf_counter() - started)
            progress.advance(task)
    figures["baseline"] = {
        "blocking_ms": median_ms(seconds),
        "blocking_p95_ms": p95_ms(seconds),
        "total_ms": median_ms(seconds),
        **memory.report(),
    }
    del model
    free(device)
    return figures


@dataclass(frozen=True)
class Workload:
    """One endurance run's inputs, shared by modelcache and the baseline."""

    shape: Shape
    dirs: dict[str, Path]
    order: list[str]  # the version each swap goes to
    x: torch.Tensor
    refs: dict[str, torch.Tensor]
    threads: int

    def unpack(
        self,
    ) -> tuple[Shape, dict[str, Path], list[str], torch.Tensor, dict[str, torch.Tensor], int]:
        return self.shape, self.dirs, self.order, self.x, self.refs, self.threads


def endurance(
    shape: Shape, work: Path, device: str, swaps: int, threads: int
) -> dict[str, dict[str, float]]:
    versions = ["v1", "v2", "v3"]
    dirs = {v: write_version(work, shape, v, seed) for seed, v in enumerate(versions, 11)}
    x = torch.randn(8, shape.dim, generator=torch.Generator().manual_seed(5))
    x = x.to(device=device, dtype=shape.dtype)
    refs = references(shape, dirs, device, x)
    order = [versions[(index + 1) % len(versions)] for index in range(swaps)]
    load = Workload(shape, dirs, order, x, refs, threads)
    figures = {"modelcache": _endurance_modelcache(load, work)}
    free(device)
    figures["baseline"] = _endurance_baseline(load)
    free(device)
    return figures


def _endurance_modelcache(load: Workload, work: Path) -> dict[str, float]:
    shape, dirs, order, x, refs, threads = load.unpack()
    device = str(x.device)
    model = shape.build(device)
    runtime = LoraRuntime(model, RuntimeConfig(model="bench/lora", root=work))
    runtime.swap("v1", dirs["v1"])
    pointers = runtime.slots.storage_pointers()

    def served(x: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        with torch.no_grad(), runtime.request() as version:
            out = model(x)
            sync(device)  # the request is over when its kernels are
            return version, out

    requests = Requests(served, refs, x, threads)
    for _ in range(3):  # warm the allocator's activation blocks
        served(x)
    memory = Memory(device)
    memory.start()
    swap_s = []
    with requests.running(), Progress(console=console, transient=True) as progress:
        task = progress.add_task("modelcache swaps under load", total=len(order))
        for version in order:
            swap_s.append(runtime.swap(version, dirs[version]).timings["swap_s"])
            progress.advance(task)
    return {
        "swaps": len(order),
        "requests": requests.served,
        "failed": requests.failed,
        "mixed_versions": requests.mixed,
        "blocking_ms": median_ms(swap_s),
        "storage_moved": float(runtime.slots.storage_pointers() != pointers),
        **memory.report(),
    }


def _endurance_baseline(load: Workload) -> dict[str, float]:
    shape, dirs, order, x, refs, threads = load.unpack()
    device = str(x.device)
    model = shape.build(device)
    rebind(model, dirs["v1"], device, shape.rank)
    live = {"version": "v1"}

    def unguarded(x: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        with torch.no_grad():
            version = live["version"]
            out = model(x)
            sync(device)
            return version, out

    requests = Requests(unguarded, refs, x, threads)
    memory = Memory(device)
    memory.start()
    seconds = []
    with requests.running(), Progress(console=console, transient=True) as progress:
        task = progress.add_task("baseline reloads under load", total=len(order))
        for version in order:
            started = time.perf_counter()
            rebind(model, dirs[version], device, shape.rank)
            live["version"] = version
            sync(device)
            seconds.append(time.perf_counter() - started)
            progress.advance(task)
    return {
        "swaps": len(order),
        "requests": requests.served,
        "failed": requests.failed,
        "mixed_versions": requests.mixed,
        "blocking_ms": median_ms(seconds),
        **memory.report(),
    }


def table(title: str, figures: dict[str, dict[str, float]]) -> Table:
    view = Table(title=title)
    view.add_column("figure")
    for name in figures:
        view.add_column(name, justify="right")
    keys = list(dict.fromkeys(k for f in figures.values() for k in f))
    for key in keys:
        cells = [figures[name].get(key) for name in figures]
        view.add_row(
            key, *("-" if c is None else f"{c:,.2f}".rstrip("0").rstrip(".") for c in cells)
        )
    return view


def describe(device: str) -> str:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()}, torch {torch.__version__}"


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument(
        "--mib",
        type=float,
        help="latency adapter size (default 1144 MiB = 1.2 GB, the case's LoRA)",
    )
    parser.add_argument("--latency-swaps", type=int, default=20)
    parser.add_argument("--endurance-mib", type=float, help="(cuda 64, cpu 4)")
    parser.add_argument("--swaps", type=int, help="endurance swaps (cuda 1000, cpu 100)")
    parser.add_argument("--requests", type=int, default=2, help="request threads during swaps")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    mib = args.mib or 1144
    endurance_mib = args.endurance_mib or (64 if on_gpu else 4)
    swaps = args.swaps or (1000 if on_gpu else 100)
    dtype = DTYPES[args.dtype]

    big = Shape.for_size(mib, args.dim, args.rank, dtype)
    small = Shape.for_size(endurance_mib, args.dim, min(args.rank, 64), dtype)
    console.print(f"[bold]device[/]: {describe(args.device)}")
    console.print(
        f"latency: {big.layers} LoRA layers {args.dim}x{args.dim} rank {big.rank} {args.dtype}, "
        f"{big.lora_bytes / 1e9:.2f} GB, {args.latency_swaps} swaps each; endurance: "
        f"{small.lora_bytes / 1e6:.0f} MB, {swaps} swaps each, {args.requests} request threads"
    )
    with tempfile.TemporaryDirectory(prefix="bench-swap-") as tmp:
        work = Path(tmp)
        fast = latency(big, work / "latency", args.device, args.latency_swaps)
        console.print(table(f"swap latency, {big.lora_bytes / 1e9:.2f} GB adapter", fast))
        long = endurance(small, work / "endurance", args.device, swaps, args.requests)
        console.print(table(f"{swaps} swaps under load, {small.lora_bytes / 1e6:.0f} MB", long))
    console.print(
        "blocking_ms: time requests are held (modelcache: the copy from staged host memory; "
        "baseline: load_file + rebind). total_ms: the whole swap incl. read and sha256. "
        "new_segments: cudaMalloc calls during the phase. mixed_versions: requests whose "
        "output is not exactly the reported version's."
    )
    if args.json:
        args.json.write_text(
            json.dumps({"device": describe(args.device), "latency": fast, "endurance": long})
        )


if __name__ == "__main__":
    main()
