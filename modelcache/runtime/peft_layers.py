"""PEFT LoRA layers (`peft.tuners.lora.Linear`) as slots: a `get_peft_model` model, or the
layers diffusers' `load_lora_weights` injects into a unet or text encoder.

A PEFT layer keeps `lora_A[adapter]` (r, in) and `lora_B[adapter]` (out, r) as nn.Linear
weights and its scale as a python float, `scaling[adapter]`. The slot takes the layer's
r as its max rank and re-points both weights into the packed buffers (`param.data =
view`), so their `data_ptr` never changes again. The scale cannot live in a tensor, so it
is set in `settle`, inside the request boundary, together with `r`, `lora_alpha` and
`use_rslora` (PEFT and diffusers recompute the scale from those, e.g. `unscale_layer`).
A weight the user set on the adapter (`set_adapters(..., adapter_weights)`,
`set_scale`) is kept: the new scale is that weight times the new alpha/r.

Anything that would make y = Wx + s*B(A(x)) with these two matrices wrong is refused
when the runtime is built (ValueError), not discovered on the first swap: several
adapters, DoRA and other variants, a trained bias, fan_in_fan_out, merged weights, and
LoRA layers other than Linear (embedding, conv, quantised).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from modelcache.runtime.bindings import LayerBinding
from modelcache.runtime.plan_types import LayerPlan


class PeftLinearBinding(LayerBinding):
    """One `peft.tuners.lora.Linear`, serving its only adapter."""

    def __init__(self, name: str, layer: Any, adapter: str) -> None:
        self.name = name
        self.layer = layer
        self.adapter = adapter
        self.weight = self._weight()  # the user's multiplier on alpha/r, usually 1.0
        self._live = True  # False once a swap cleared the slot (scale 0, weight unknowable)

    @property
    def lora_A(self) -> torch.Tensor:  # noqa: N802
        weight: torch.Tensor = self.layer.lora_A[self.adapter].weight
        return weight

    @property
    def lora_B(self) -> torch.Tensor:  # noqa: N802
        weight: torch.Tensor = self.layer.lora_B[self.adapter].weight
        return weight

    @property
    def scale(self) -> float:
        return float(self.layer.scaling[self.adapter])

    def bind(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> None:
        del scale  # PEFT multiplies by a python float; settle() sets it
        self.layer.lora_A[self.adapter].weight.data = a
        self.layer.lora_B[self.adapter].weight.data = b

    def settle(self, layer: LayerPlan | None) -> None:
        if self._live:
            self.weight = self._weight()
        if layer is None:
            self.layer.scaling[self.adapter] = 0.0
            self._live = False
            return
        self.layer.r[self.adapter] = layer.rank
        self.layer.lora_alpha[self.adapter] = layer.alpha
        self.layer.use_rslora[self.adapter] = layer.use_rslora
        self.layer.scaling[self.adapter] = self.weight * layer.scaling
        self._live = True

    def _weight(self) -> float:
        """scaling / (alpha/r): what set_adapters/set_scale multiplied the scale by."""
        layer, adapter = self.layer, self.adapter
        rank, alpha = float(layer.r[adapter]), float(layer.lora_alpha[adapter])
        root = math.sqrt(rank) if layer.use_rslora.get(adapter, False) else rank
        base = alpha / root
        current = float(layer.scaling[adapter])
        if base in (0.0, current):
            return 1.0
        return current / base


def peft_bindings(model: nn.Module) -> list[tuple[str, LayerBinding]]:
    """The PEFT LoRA layers of `model`, each checked; ValueError names the first unsupported."""
    from peft.tuners.lora import Linear as PeftLinear  # noqa: PLC0415 - peft is optional
    from peft.tuners.lora import LoraLayer  # noqa: PLC0415

    found: list[tuple[str, LayerBinding]] = []
    adapters: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        layer: Any = module
        if not isinstance(module, PeftLinear) or not isinstance(layer.base_layer, nn.Linear):
            raise ValueError(
                f"LoRA layer {name} is a {type(module).__module__}.{type(module).__name__} "
                f"over {type(layer.base_layer).__name__}: only PEFT LoRA on nn.Linear is "
                "supported (not embedding, conv or quantised layers); leave it out of "
                "target_modules"
            )
        adapter = _only_adapter(name, layer)
        adapters.add(adapter)
        _check_plain(name, layer, adapter)
        found.append((name, PeftLinearBinding(name, layer, adapter)))
    if len(adapters) > 1:
        raise ValueError(
            f"the model's LoRA layers serve different adapters {sorted(adapters)}: "
            "one adapter per runtime"
        )
    return found


def _only_adapter(name: str, layer: Any) -> str:
    loaded = sorted(layer.lora_A.keys())
    if len(loaded) != 1:
        raise ValueError(
            f"LoRA layer {name} holds {len(loaded)} adapters {loaded}: the runtime swaps "
            "exactly one (delete_adapter the others)"
        )
    active = list(layer.active_adapters)
    if active != loaded:
        raise ValueError(
            f"LoRA layer {name}: adapter {loaded[0]!r} is loaded but the active adapters are "
            f"{active}; activate it (set_adapter) before building the runtime"
        )
    adapter: str = loaded[0]
    return adapter


def _check_plain(name: str, layer: Any, adapter: str) -> None:
    problems = []
    if layer.use_dora.get(adapter, False):
        problems.append("use_dora=True (DoRA)")
    if adapter in getattr(layer, "lora_variant", {}):
        problems.append(f"a LoRA variant ({type(layer.lora_variant[adapter]).__name__})")
    if layer.lora_bias.get(adapter, False) or layer.lora_B[adapter].bias is not None:
        problems.append("lora_bias=True")
    if getattr(layer, "fan_in_fan_out", False):
        problems.append("fan_in_fan_out=True")
    if layer.merged:
        problems.append("merged adapter weights (unmerge first)")
    if problems:
        raise ValueError(f"LoRA layer {name}: {', '.join(problems)} is not supported by the slots")
