"""A diffusers pipeline's LoRA (`pipe.load_lora_weights(...)`) as one set of slots.

diffusers injects PEFT LoRA layers into the pipeline's components (unet or transformer,
text_encoder, text_encoder_2) under one adapter name, and its `save_lora_weights` writes
one safetensors file whose keys carry the component: `unet.<module>.lora_A.weight`,
`text_encoder.<module>.lora_B.weight`. The runtime gathers the LoRA-bearing components in
an `nn.ModuleDict` keyed by component name (a registry of references: nothing is copied
or moved), so slot names are exactly those keys less the suffix. Older files written
before diffusers used PEFT (`...lora.down.weight`/`lora.up.weight`, `lora_linear_layer`,
attention-processor `to_q_lora.down`) map onto the same slots; kohya files (`lora_unet_*`,
`.alpha` tensors) do not and are refused key by key.

CLIP text encoders' `text_model.` level: transformers 5 flattened `CLIPTextModel`
(`encoder.layers.0...`) but not `CLIPTextModelWithProjection` (`text_model.encoder...`),
and LoRAs trained earlier name both with `text_model.` (`text_encoder.text_model.encoder
...`). diffusers drops the level from the keys when the text encoder has none; the key
map cannot see the pipeline, so slot names drop it for every text encoder instead: keys
`<text_encoder*>.text_model.<rest>` and `<text_encoder*>.<rest>` both name the slot
`<text_encoder*>.<rest>`, and a text encoder with a `text_model` child is registered
through `TextModelView`, which holds the same submodules one level up.

Settings (rank, alpha, target modules) per component, first found wins:
1. `lora_adapter_metadata` in the safetensors header: a JSON object of
   `<component>.<LoraConfig field>`, which diffusers writes when the saver passes
   `unet_lora_adapter_metadata=` (and `text_encoder_lora_adapter_metadata=`);
2. `adapter_config.json` in the version: the same `<component>.<field>` object, or one
   plain PEFT adapter_config that then applies to every component;
3. else the version is refused. diffusers itself would guess (rank from the shapes,
   alpha = rank, i.e. scale 1) and we will not swap a guessed scale into production.
Target modules are matched against the module name inside its component.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from modelcache.runtime.errors import SwapRefused
from modelcache.runtime.settings import AdapterSettings, SettingsReader, settings_from_mapping
from modelcache.runtime.untrusted_json import json_object

METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY

# suffix -> (PEFT suffix part, "A"/"B"), most specific first
_SUFFIXES = (
    (".lora_A.weight", "A"),
    (".lora_B.weight", "B"),
    (".lora_linear_layer.down.weight", "A"),
    (".lora_linear_layer.up.weight", "B"),
    (".lora.down.weight", "A"),
    (".lora.up.weight", "B"),
    ("_lora.down.weight", "A"),  # attention processors: attn1.processor.to_q_lora.down.weight
    ("_lora.up.weight", "B"),
)
# attention-processor names -> module names, per kind of component
_UNET_PROCESSOR = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
_TEXT_PROCESSOR = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
_TEXT_ENCODER = "text_encoder"  # text_encoder, text_encoder_2, text_encoder_3
_TEXT_MODEL = "text_model."


def diffusers_keys(key: str) -> tuple[str, str] | None:
    """A diffusers LoRA key -> (slot name `<component>.<module>`, "A" or "B")."""
    for suffix, part in _SUFFIXES:
        if not key.endswith(suffix):
            continue
        name = key[: -len(suffix)].replace(".processor.", ".")
        if suffix.startswith("_lora"):
            head, _, processor = name.rpartition(".")
            names = _TEXT_PROCESSOR if name.startswith(_TEXT_ENCODER) else _UNET_PROCESSOR
            if processor not in names:
                return None
            name = f"{head}.{names[processor]}"
        return _without_text_model(name), part
    return None


def _without_text_model(name: str) -> str:
    """`text_encoder.text_model.encoder...` -> `text_encoder.encoder...` (module docstring)."""
    component, _, rest = name.partition(".")
    if component.startswith(_TEXT_ENCODER) and rest.startswith(_TEXT_MODEL):
        return f"{component}.{rest.removeprefix(_TEXT_MODEL)}"
    return name


def pipeline_modules(pipeline: Any, components: Sequence[str] | None = None) -> nn.ModuleDict:
    """The pipeline's torch components that hold LoRA layers, by component name."""
    available = getattr(pipeline, "components", None)
    if not isinstance(available, Mapping):
        raise ValueError(
            f"{type(pipeline).__name__} has no `components` mapping: not a diffusers pipeline"
        )
    wanted = list(available) if components is None else list(components)
    chosen: dict[str, nn.Module] = {}
    for name in wanted:
        module = available.get(name)
        if components is not None and not isinstance(module, nn.Module):
            raise ValueError(f"pipeline component {name!r} is not a torch module")
        if isinstance(module, nn.Module) and (components is not None or _has_lora(module)):
            chosen[name] = _flattened(module) if name.startswith(_TEXT_ENCODER) else module
    if not chosen:
        raise ValueError(
            f"no component of {type(pipeline).__name__} holds LoRA layers: call "
            "pipe.load_lora_weights(...) with an adapter of the largest rank you will serve first"
        )
    return nn.ModuleDict(chosen)


class TextModelView(nn.Module):
    """A text encoder's submodules with its `text_model` level left out of their names.

    Registers references to the same modules (nothing is copied, moved or wrapped), so
    `text_model.encoder.layers.0.self_attn.q_proj` is found as `encoder.layers.0...`.
    Only for naming the slots: it has no forward."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        for name, child in encoder.named_children():
            if name == _TEXT_MODEL.rstrip("."):
                for inner, grandchild in child.named_children():
                    self.add_module(inner, grandchild)
            else:
                self.add_module(name, child)


def _flattened(module: nn.Module) -> nn.Module:
    """`module` itself, or a `TextModelView` of it when it has a `text_model` child."""
    children = dict(module.named_children())
    text_model = children.pop(_TEXT_MODEL.rstrip("."), None)
    if text_model is None:
        return module
    clash = sorted(set(children) & {name for name, _ in text_model.named_children()})
    if clash:
        raise ValueError(
            f"{type(module).__name__} has both text_model.{clash[0]} and {clash[0]}: "
            "its LoRA layers cannot be named the way diffusers names their keys"
        )
    return TextModelView(module)


def _has_lora(module: nn.Module) -> bool:
    return any(
        hasattr(m, "lora_A") and hasattr(m, "scaling") and hasattr(m, "base_layer")
        for m in module.modules()
    )


@dataclass(frozen=True)
class ComponentSettings:
    """One `AdapterSettings` per pipeline component; layer names are `<component>.<module>`."""

    components: Mapping[str, AdapterSettings]

    def _split(self, layer: str) -> tuple[AdapterSettings | None, str]:
        component, _, module = layer.partition(".")
        return self.components.get(component), module

    def targets(self, layer: str) -> bool:
        settings, module = self._split(layer)
        return settings is not None and settings.targets(module)

    def rank_for(self, layer: str) -> int:
        settings, module = self._required(layer)
        return settings.rank_for(module)

    def alpha_for(self, layer: str) -> float:
        settings, module = self._required(layer)
        return settings.alpha_for(module)

    def rslora_for(self, layer: str) -> bool:
        settings, module = self._required(layer)
        return settings.rslora_for(module)

    def scaling_for(self, layer: str) -> float:
        settings, module = self._required(layer)
        return settings.scaling_for(module)

    def describe_targets(self, layer: str | None) -> str:
        if layer is None:
            return "; ".join(
                f"{name} {s.describe_targets(None)}" for name, s in self.components.items()
            )
        component = layer.partition(".")[0]
        settings = self.components.get(component)
        if settings is None:
            return f"the settings (none for component {component!r}, only {list(self.components)})"
        return f"{component} {settings.describe_targets(None)}"

    def _required(self, layer: str) -> tuple[AdapterSettings, str]:
        settings, module = self._split(layer)
        if settings is None:  # make_plan asks only for targeted layers
            raise KeyError(layer)
        return settings, module


def settings_reader(config_file: str) -> SettingsReader:
    """The rule in this module's docstring, as `LoraRuntime`'s settings reader."""

    def read(
        config: bytes | None, metadata: Mapping[str, str], directory: Path
    ) -> ComponentSettings:
        if METADATA_KEY in metadata:
            where = f"{directory} (safetensors {METADATA_KEY})"
            settings = json_object(metadata[METADATA_KEY], "format", where)
            return _components(settings, where, flat_ok=False)
        if config is not None:
            where = str(directory / config_file)
            return _components(json_object(config, "format", where), where, flat_ok=True)
        raise SwapRefused(
            "settings",
            f"{directory}: no {METADATA_KEY} in the safetensors header and no {config_file}: "
            "save with save_lora_weights(..., unet_lora_adapter_metadata=lora_config.to_dict())",
        )

    return read


def _components(data: Mapping[str, Any], where: str, *, flat_ok: bool) -> ComponentSettings:
    if flat_ok and "r" in data:
        plain = settings_from_mapping(data, where=where)
        return ComponentSettings(_EveryComponent(plain))
    fields: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        component, dot, field_name = key.partition(".")
        if not dot:
            raise SwapRefused("settings", f"{where}: key {key!r} is not <component>.<field>")
        fields.setdefault(component, {})[field_name] = value
    if not fields:
        raise SwapRefused("settings", f"{where}: no component settings")
    return ComponentSettings(
        {
            component: settings_from_mapping(values, where=f"{where} [{component}]")
            for component, values in fields.items()
        }
    )


class _EveryComponent(Mapping[str, AdapterSettings]):
    """One plain adapter_config.json, applying to whichever component is asked."""

    def __init__(self, settings: AdapterSettings) -> None:
        self.settings = settings

    def __getitem__(self, key: str) -> AdapterSettings:
        return self.settings

    def __iter__(self) -> Any:
        return iter(("*",))

    def __len__(self) -> int:
        return 1
