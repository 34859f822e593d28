"""Where a model's LoRA layers are: our `LoraLinear`s, and PEFT's LoRA Linears.

PEFT layers are looked for only when `peft` is already imported: a model cannot hold a
PEFT layer otherwise, and `import modelcache.runtime` must work without peft installed.
"""

from __future__ import annotations

import sys

from torch import nn

from modelcache.runtime.bindings import PEFT_MODEL_PREFIX, LayerBinding, LoraLinearBinding
from modelcache.runtime.lora import LoraLinear


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
