"""`Staging`: a host mirror of the live slots, filled from the adapter file in one pass.

The mirror has the live layout (flat buffers per dtype, plus the scales), pinned when
the slots are on a GPU, allocated once. Filling it reads the file front to back: every
byte goes through sha256 exactly once, and each tensor lands in its slot region (A rows
directly; B directly at full rank, else through one reusable scratch buffer, since a
rank-r B is a column block of the slot). Unused rows, columns and untargeted slots are
zeroed, so the mirror is the whole next state and the swap is a plain copy of it. The
mirror is scratch until the checksum matches: a failed fill leaves the live slots alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import BinaryIO

import torch

from modelcache.fs import Digest, StreamHasher
from modelcache.runtime.errors import SwapRefused
from modelcache.runtime.plan import AdapterPlan, LayerPlan
from modelcache.runtime.safetensors_format import Header, byte_view
from modelcache.runtime.slots import SlotLayout


@dataclass(frozen=True)
class Filled:
    """The result of a fill: the file's digest and where the time went."""

    digest: Digest
    read_s: float
    hash_s: float


class Staging:
    """Host-side next state of the slots; one per runtime, used by one swap at a time."""

    def __init__(self, layout: SlotLayout, *, pin: bool) -> None:
        self.layout = layout
        self.pinned = pin

        def host(size: int, dtype: torch.dtype) -> torch.Tensor:
            tensor = torch.zeros(size, dtype=dtype)
            return tensor.pin_memory() if pin else tensor

        self.flats = {dtype: host(size, dtype) for dtype, size in layout.sizes.items()}
        self.scales = host(len(layout.slots), torch.float32)
        largest_b = max(s.b_numel * s.dtype.itemsize for s in layout)
        self._scratch = torch.zeros(largest_b, dtype=torch.uint8)
        self._scratch_bytes = byte_view(self._scratch)
        self._bytes = {dtype: byte_view(flat) for dtype, flat in self.flats.items()}

    def fill(self, handle: BinaryIO, header: Header, plan: AdapterPlan, *, where: str) -> Filled:
        """Read the whole file into the mirror, hashing it; the header must be unchanged."""
        hasher = StreamHasher()
        read_s = hash_s = 0.0
        handle.seek(0)
        raw = handle.read(len(header.raw))
        if raw != header.raw:
            raise SwapRefused("io", f"{where} changed while it was being read")
        hasher.update(raw)
        for entry in header.in_file_order():
            layer, part = plan.by_tensor[entry.name]
            started = time.perf_counter()
            target = self._target(layer, part, entry.nbytes)
            _read_exactly(handle, target, where)
            read_s += time.perf_counter() - started
            started = time.perf_counter()
            hasher.update(target)
            hash_s += time.perf_counter() - started
            if part == "B" and layer.rank < layer.slot.max_rank:
                self._scatter_b(layer)
        if handle.read(1):
            raise SwapRefused("io", f"{where} grew while it was being read")
        self._zero_unused(plan)
        return Filled(digest=hasher.digest(), read_s=read_s, hash_s=hash_s)

    def _target(self, layer: LayerPlan, part: str, nbytes: int) -> memoryview:
        """Where a tensor's bytes go: its slot region, or the scratch for a narrow B."""
        slot = layer.slot
        if part == "B" and layer.rank < slot.max_rank:
            return self._scratch_bytes[:nbytes]
        offset = (slot.a_offset if part == "A" else slot.b_offset) * slot.dtype.itemsize
        return self._bytes[slot.dtype][offset : offset + nbytes]

    def _scatter_b(self, layer: LayerPlan) -> None:
        slot, rank = layer.slot, layer.rank
        source = self._scratch[: layer.b.nbytes].view(slot.dtype).view(slot.out_features, rank)
        slot.b_view(self.flats[slot.dtype])[:, :rank].copy_(source)

    def _zero_unused(self, plan: AdapterPlan) -> None:
        for slot in self.layout:
            flat = self.flats[slot.dtype]
            a, b = slot.a_view(flat), slot.b_view(flat)
            layer = plan.layers.get(slot.name)
            if layer is None:
                a.zero_()
                b.zero_()
                self.scales[slot.index] = 0.0
                continue
            a[layer.rank :].zero_()
            b[:, layer.rank :].zero_()
            self.scales[slot.index] = layer.scaling


def _read_exactly(handle: BinaryIO, target: memoryview, where: str) -> None:
    done = 0
    while done < len(target):
        got = handle.readinto(target[done:])  # type: ignore[attr-defined]
        if not got:
            raise SwapRefused("io", f"{where} ended early (it shrank while being read)")
        done += got
