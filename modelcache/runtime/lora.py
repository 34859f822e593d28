"""`LoraLinear`: a linear layer with a resident LoRA slot, and `add_lora` to fit it into a model.

The slot is sized once, at `max_rank`, and never re-allocated: an adapter of rank
r <= max_rank lives in the leading r rows of A and the leading r columns of B, the
rest is zero. Zero rows and columns add exactly nothing to the output, so one slot
serves every rank up to its maximum at a fixed compute cost (that of max_rank); this
is the price of never allocating on a swap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class LoraLinear(nn.Module):
    """y = base(x) + scaling * B(A(x)); A is (max_rank, in), B is (out, max_rank).

    `lora_A`, `lora_B` and `lora_scaling` (a 0-d float32 tensor: alpha/r of the live
    adapter, 0 when none) are buffers, not parameters: they are written only by a swap.
    `LoraSlots` re-points them into one flat buffer per dtype, so build the slots after the
    model is on its device and in its dtype, and do not move the model afterwards.
    """

    lora_A: torch.Tensor  # noqa: N815 - PEFT's names, which adapter files use
    lora_B: torch.Tensor  # noqa: N815
    lora_scaling: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        max_rank: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        base = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        super().__init__()
        self._init_slot(base, max_rank)

    @classmethod
    def wrap(cls, linear: nn.Linear, *, max_rank: int) -> LoraLinear:
        """A LoraLinear around an existing layer (its weight is kept, not copied)."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._init_slot(linear, max_rank)
        return layer

    def _init_slot(self, base: nn.Linear, max_rank: int) -> None:
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        self.base = base
        self.max_rank = max_rank
        weight = base.weight
        device, dtype = weight.device, weight.dtype
        self.register_buffer(
            "lora_A", torch.zeros(max_rank, base.in_features, device=device, dtype=dtype)
        )
        self.register_buffer(
            "lora_B", torch.zeros(base.out_features, max_rank, device=device, dtype=dtype)
        )
        self.register_buffer(
            "lora_scaling", torch.zeros((), device=weight.device, dtype=torch.float32)
        )

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 0-d float32 scale does not promote a float16/bfloat16 activation.
        base: torch.Tensor = self.base(x)
        return base + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.lora_scaling


def matches_target(name: str, targets: Sequence[str] | str) -> bool:
    """PEFT's rule: a list matches a module whose name equals an entry or ends in '.entry';
    a string is a regular expression the whole name must match."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in targets)


def add_lora(model: nn.Module, targets: Sequence[str] | str, *, max_rank: int) -> list[str]:
    """Replace each nn.Linear whose name matches `targets` by a LoraLinear wrapping it.

    Returns the names of the wrapped layers, which are the LoRA slot names."""
    wrapped = {id(m.base) for m in model.modules() if isinstance(m, LoraLinear)}
    chosen = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and id(module) not in wrapped
        and name
        and matches_target(name, targets)
    ]
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLinear.wrap(module, max_rank=max_rank))
    return [name for name, _ in chosen]
