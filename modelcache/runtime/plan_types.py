"""The runtime's plain data types: a slot, and what a swap puts into the slots.

At the bottom of the runtime, so that the slots, the layer bindings, the planner and
PEFT's layers all use them without importing one another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from modelcache.runtime.safetensors_format import TensorEntry


@dataclass(frozen=True)
class Slot:
    """One layer's LoRA slot; offsets are in elements of its dtype's flat buffer."""

    name: str
    index: int  # position in the scales buffer
    in_features: int
    out_features: int
    max_rank: int
    dtype: torch.dtype
    a_offset: int
    b_offset: int

    @property
    def a_numel(self) -> int:
        return self.max_rank * self.in_features

    @property
    def b_numel(self) -> int:
        return self.out_features * self.max_rank

    def a_view(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.a_offset : self.a_offset + self.a_numel].view(
            self.max_rank, self.in_features
        )

    def b_view(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.b_offset : self.b_offset + self.b_numel].view(
            self.out_features, self.max_rank
        )


@dataclass(frozen=True)
class LayerPlan:
    """What goes into one slot: the rank-r tensors A (r, in) and B (out, r), and the scale."""

    slot: Slot
    rank: int
    scaling: float
    a: TensorEntry
    b: TensorEntry
    alpha: float = 0.0  # what the scale came from, for layers that keep them (PEFT)
    use_rslora: bool = False


@dataclass(frozen=True)
class AdapterPlan:
    """Every targeted slot's content; slots absent from `layers` are zeroed (no LoRA there)."""

    layers: Mapping[str, LayerPlan]
    by_tensor: Mapping[str, tuple[LayerPlan, str]]  # tensor name -> (its layer, "A" or "B")
