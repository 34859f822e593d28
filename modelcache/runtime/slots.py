"""`LoraSlots`: every LoRA slot of a model, packed once into one flat buffer per dtype.

Packing makes the slot set a handful of contiguous tensors, so a swap is one copy per
dtype (plus one for the scales) from a host mirror of the same layout: on a GPU, a few
large DMA transfers instead of thousands of small ones, and no allocation at all. The
modules' `lora_A`/`lora_B`/`lora_scaling` buffers become views into the flat buffers,
so their `data_ptr` never changes after construction. Layers are reached through
`LayerBinding`s (bindings.py): our `LoraLinear`, or PEFT's LoRA Linear (peft_layers.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from modelcache.runtime.bindings import LayerBinding, check_unique
from modelcache.runtime.discovery import find_bindings
from modelcache.runtime.plan_types import AdapterPlan, Slot

__all__ = ["ALIGN_BYTES", "LoraSlots", "Slot", "SlotLayout"]

ALIGN_BYTES = 128  # each region starts on a 128-byte boundary, as GEMM kernels prefer


@dataclass(frozen=True)
class SlotLayout:
    """Where every slot lives: sizes of the flat buffers, for live and staging alike."""

    slots: Mapping[str, Slot]
    sizes: Mapping[torch.dtype, int]

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots.values())

    @property
    def nbytes(self) -> int:
        scales = len(self.slots) * 4
        return scales + sum(n * dtype.itemsize for dtype, n in self.sizes.items())


def _layout(layers: Sequence[tuple[str, LayerBinding]]) -> SlotLayout:
    sizes: dict[torch.dtype, int] = {}
    slots: dict[str, Slot] = {}
    for index, (name, layer) in enumerate(layers):
        dtype = layer.lora_A.dtype
        align = max(1, ALIGN_BYTES // dtype.itemsize)
        position = sizes.get(dtype, 0)
        a_offset = -(-position // align) * align
        b_offset = -(-(a_offset + layer.max_rank * layer.in_features) // align) * align
        sizes[dtype] = b_offset + layer.out_features * layer.max_rank
        slots[name] = Slot(
            name=name,
            index=index,
            in_features=layer.in_features,
            out_features=layer.out_features,
            max_rank=layer.max_rank,
            dtype=dtype,
            a_offset=a_offset,
            b_offset=b_offset,
        )
    return SlotLayout(slots=slots, sizes=sizes)


class LoraSlots:
    """The resident LoRA weights of one model: discovered, packed, then only ever copied into."""

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        bindings: Sequence[tuple[str, LayerBinding]] | None = None,
    ) -> None:
        """Pack the LoRA layers of `model` (LoraLinear, PEFT LoRA Linear), or `bindings`."""
        if bindings is None:
            if model is None:
                raise ValueError("LoraSlots needs a model or bindings")
            bindings = find_bindings(model)
        layers = list(bindings)
        if not layers:
            raise ValueError(
                "the model has no LoRA layers (LoraLinear or PEFT LoRA Linear): nothing to swap"
            )
        check_unique([name for name, _ in layers])
        devices = {m.lora_A.device for _, m in layers}
        if len(devices) != 1:
            raise ValueError(f"LoRA slots span several devices: {sorted(map(str, devices))}")
        self.device: torch.device = devices.pop()
        self.layout = _layout(layers)
        self.flats: dict[torch.dtype, torch.Tensor] = {
            dtype: torch.zeros(size, dtype=dtype, device=self.device)
            for dtype, size in self.layout.sizes.items()
        }
        self.scales = torch.zeros(len(layers), dtype=torch.float32, device=self.device)
        for name, layer in layers:
            slot = self.layout.slots[name]
            flat = self.flats[slot.dtype]
            a, b = slot.a_view(flat), slot.b_view(flat)
            with torch.no_grad():
                a.copy_(layer.lora_A)
                b.copy_(layer.lora_B)
            self.scales[slot.index] = layer.scale
            layer.bind(a, b, self.scales[slot.index])
        self.bindings: dict[str, LayerBinding] = dict(layers)
        self._stream: torch.cuda.Stream | None = None
        if self.device.type == "cuda":
            self._stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]

    @property
    def slots(self) -> Mapping[str, Slot]:
        return self.layout.slots

    def load(self, flats: Mapping[torch.dtype, torch.Tensor], scales: torch.Tensor) -> None:
        """Copy a staged mirror into the live slots (callers hold the request boundary).

        On CUDA: wait for all queued work on the device (a request that has left may still
        have kernels reading the slots), copy on a side stream from pinned memory, and wait
        for the copy, so the next request starts on complete weights."""
        if self._stream is None:
            self._copy(flats, scales, non_blocking=False)
            return
        torch.cuda.synchronize(self.device)
        with torch.cuda.stream(self._stream):
            self._copy(flats, scales, non_blocking=True)
        self._stream.synchronize()

    def settle(self, plan: AdapterPlan) -> None:
        """After `load`, inside the same request boundary: let layers that keep state outside
        the slots (PEFT's python-float scale) catch up with what the slots now hold."""
        for name, binding in self.bindings.items():
            binding.settle(plan.layers.get(name))

    def _copy(
        self, flats: Mapping[torch.dtype, torch.Tensor], scales: torch.Tensor, *, non_blocking: bool
    ) -> None:
        for dtype, live in self.flats.items():
            live.copy_(flats[dtype], non_blocking=non_blocking)
        self.scales.copy_(scales, non_blocking=non_blocking)

    def storage_pointers(self) -> dict[str, int]:
        """data_ptr of every live buffer, to show that swaps never re-allocate."""
        found = {str(dtype): flat.data_ptr() for dtype, flat in self.flats.items()}
        found["scales"] = self.scales.data_ptr()
        return found
