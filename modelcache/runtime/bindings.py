"""`LayerBinding`: how `LoraSlots` reaches into one kind of LoRA layer.

The slots need the same three things from every layer kind: its current A (max_rank, in)
and B (out, max_rank) tensors and scale, a way to make the layer use views into the
packed flat buffers instead (`bind`, once, when the runtime is built), and a way to set
whatever the layer keeps outside tensors (a PEFT layer's python-float `scaling`, its
`r`/`lora_alpha` bookkeeping) when a swap goes live (`settle`, inside the request
boundary). Our own `LoraLinear` keeps everything in tensors, so its `settle` does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modelcache.runtime.lora import LoraLinear
from modelcache.runtime.plan_types import LayerPlan

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


def check_unique(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two LoRA layers share the slot name {name!r}")
        seen.add(name)
