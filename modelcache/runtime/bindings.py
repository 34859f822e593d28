"""`LayerBinding`: how `LoraSlots` reaches into one kind of LoRA layer, and where to find them.

The slots need the same three things from every layer kind: its current A (max_rank, in)
and B (out, max_rank) tensors and scale, a way to make the layer use views into the
packed flat buffers instead (`bind`, once, when the runtime is built), and a way to set
whatever the layer keeps outside tensors (a PEFT layer's python-float `scaling`, its
`r`/`lora_alpha` bookkeeping) when a swap goes live (`settle`, inside the request
boundary). Our own `LoraLinear` keeps everything in tensors, so its `settle` does nothing.

PEFT layers are looked for only when `peft` is already imported: a model cannot hold a
PEFT layer otherwise, and `import modelcache.runtime` must work without peft installed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from modelcache.runtime.lora import LoraLinear

if TYPE_CHECKING:
    from modelcache.runtime.plan import LayerPlan

PEFT_MODEL_PREFIX = "base_model.model."  # PeftModel's module names; PEFT strips it when saving


class LayerBinding:
    """One LoRA layer as the slots see it; subclasses say where its tensors live."""

    @property
    def lora_A(self) -> torch.Tensor:  # noqa: N802 - PEFT's names
        raise NotImplementedError

    @property
    def lora_B(self) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError

    @property
    def scale(self) -> float:
        raise NotImplementedError

    @property
    def max_rank(self) -> int:
        return int(self.lora_A.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.lora_A.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.lora_B.shape[0])

    def bind(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> None:
        """Make the layer compute with these views (already holding its current values)."""
        raise NotImplementedError

    def settle(self, layer: LayerPlan | None) -> None:
        """Called inside the request boundary right after the copy: `layer` is what the
        slot now holds (None: cleared). Only state kept outside the slots needs it."""


class LoraLinearBinding(LayerBinding):
    """Our `LoraLinear`: buffers re-pointed, the scale a 0-d view into the scales buffer."""

    def __init__(self, layer: LoraLinear) -> None:
        self.layer = layer

    @property
    def lora_A(self) -> torch.Tensor:  # noqa: N802
        return self.layer.lora_A

    @property
    def lora_B(self) -> torch.Tensor:  # noqa: N802
        return self.layer.lora_B

    @property
    def scale(self) -> float:
        return float(self.layer.lora_scaling)

    def bind(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> None:
        self.layer.lora_A, self.layer.lora_B = a, b
        self.layer.lora_scaling = scale


def find_bindings(model: nn.Module) -> list[tuple[str, LayerBinding]]:
    """Every LoRA layer of `model` with its slot name (the name PEFT saves its keys under).

    Raises ValueError for PEFT LoRA layers the slots cannot serve (see peft_layers)."""
    found: list[tuple[str, LayerBinding]] = [
        (name, LoraLinearBinding(module))
        for name, module in model.named_modules()
        if isinstance(module, LoraLinear)
    ]
    if sys.modules.get("peft") is not None:
        from modelcache.runtime.peft_layers import peft_bindings  # noqa: PLC0415 - optional

        found.extend(peft_bindings(model))
    return [(_slot_name(name), binding) for name, binding in found]


def _slot_name(name: str) -> str:
    return name.removeprefix(PEFT_MODEL_PREFIX)


def check_unique(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two LoRA layers share the slot name {name!r}")
        seen.add(name)
