"""Validation: match an adapter's header and settings to the slots, or say exactly why not.

Runs on the header alone, before a byte of tensor data is read and long before the
live weights are touched. Keys follow PEFT's saved form, `<module>.lora_A.weight` and
`<module>.lora_B.weight`, with PEFT's `base_model.model.` prefix optional; other key
formats (diffusers/kohya) map onto the same plan through `KeyMap`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from modelcache.runtime.errors import SwapRefused
from modelcache.runtime.plan_types import AdapterPlan, LayerPlan, Slot
from modelcache.runtime.safetensors_format import DTYPE_NAMES, Header, TensorEntry
from modelcache.runtime.settings import LayerSettings

__all__ = ["AdapterPlan", "KeyMap", "LayerPlan", "make_plan", "peft_keys"]

PEFT_PREFIX = "base_model.model."
A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"

# A key -> (layer name, "A" or "B"), or None for a key the format does not know.
KeyMap = Callable[[str], tuple[str, str] | None]


def peft_keys(key: str) -> tuple[str, str] | None:
    """PEFT's saved keys, with or without the `base_model.model.` prefix."""
    name = key.removeprefix(PEFT_PREFIX)
    for suffix, part in ((A_SUFFIX, "A"), (B_SUFFIX, "B")):
        if name.endswith(suffix):
            return name[: -len(suffix)], part
    return None


def make_plan(
    header: Header,
    settings: LayerSettings,
    slots: Mapping[str, Slot],
    *,
    where: str,
    key_map: KeyMap = peft_keys,
) -> AdapterPlan:
    """Check every key, shape, dtype and setting against the slots; refuse on the first error."""
    found: dict[str, dict[str, TensorEntry]] = {}
    for key, entry in header.tensors.items():
        mapped = key_map(key)
        if mapped is None:
            raise SwapRefused(
                "key", f"{where}: unexpected tensor {key!r}: only LoRA A/B weights are supported"
            )
        layer, part = mapped
        if layer not in slots:
            raise SwapRefused(
                "key", f"{where}: tensor {key!r} is for layer {layer!r}, which has no LoRA slot"
            )
        if not settings.targets(layer):
            raise SwapRefused(
                "settings",
                f"{where}: tensor {key!r} is for layer {layer!r}, which "
                f"{settings.describe_targets(layer)} does not select",
            )
        if part in found.setdefault(layer, {}):
            raise SwapRefused("key", f"{where}: two tensors give lora_{part} of layer {layer!r}")
        found[layer][part] = entry
    targeted = [name for name in slots if settings.targets(name)]
    if not targeted:
        raise SwapRefused(
            "settings",
            f"{where}: {settings.describe_targets(None)} select no LoRA slot",
        )
    layers: dict[str, LayerPlan] = {}
    by_tensor: dict[str, tuple[LayerPlan, str]] = {}
    for name in targeted:
        plan = _layer(slots[name], found.get(name, {}), settings, where)
        layers[name] = plan
        by_tensor[plan.a.name] = (plan, "A")
        by_tensor[plan.b.name] = (plan, "B")
    return AdapterPlan(layers=layers, by_tensor=by_tensor)


def _layer(
    slot: Slot, parts: Mapping[str, TensorEntry], settings: LayerSettings, where: str
) -> LayerPlan:
    name = slot.name
    for part, suffix in (("A", A_SUFFIX), ("B", B_SUFFIX)):
        if part not in parts:
            raise SwapRefused("key", f"{where}: missing key {name + suffix!r}")
    rank = settings.rank_for(name)
    if rank > slot.max_rank:
        raise SwapRefused(
            "rank", f"{where}: lora rank {rank} exceeds slot rank {slot.max_rank} for layer {name}"
        )
    a, b = parts["A"], parts["B"]
    for entry, part, want in (
        (a, "A", (rank, slot.in_features)),
        (b, "B", (slot.out_features, rank)),
    ):
        if entry.shape != want:
            if _rank_only(entry.shape, want, part):
                found = entry.shape[0 if part == "A" else 1]
                if found > slot.max_rank:
                    raise SwapRefused(
                        "rank",
                        f"{where}: lora rank {found} exceeds slot rank {slot.max_rank} "
                        f"for layer {name} (lora_{part} has shape {list(entry.shape)})",
                    )
                raise SwapRefused(
                    "rank",
                    f"{where}: lora_{part} of layer {name} has rank {found} "
                    f"but the adapter settings say {rank}",
                )
            raise SwapRefused(
                "shape",
                f"{where}: lora_{part} of layer {name} has shape {list(entry.shape)}, "
                f"expected {list(want)} (rank {rank}, slot {slot.out_features}x{slot.in_features})",
            )
        if entry.dtype != slot.dtype:
            raise SwapRefused(
                "dtype",
                f"{where}: lora_{part} of layer {name} is {entry.dtype_name}; the slot holds "
                f"{DTYPE_NAMES[slot.dtype]} (no implicit casts)",
            )
    return LayerPlan(
        slot=slot,
        rank=rank,
        scaling=settings.scaling_for(name),
        a=a,
        b=b,
        alpha=settings.alpha_for(name),
        use_rslora=settings.rslora_for(name),
    )


def _rank_only(shape: tuple[int, ...], want: tuple[int, int], part: str) -> bool:
    """True when only the rank dimension differs (the settings and the tensor disagree)."""
    if len(shape) != 2:
        return False
    keep = 1 if part == "A" else 0
    return shape[keep] == want[keep]
