"""`AdapterSettings`: rank, alpha and target modules of a LoRA, read the way PEFT writes them.

Sources, first found wins: an `adapter_config.json` beside the weights (PEFT's
`save_pretrained`), else the safetensors `__metadata__` (keys `r`, `lora_alpha`,
`target_modules` as a JSON list or a regex, optional `rank_pattern`/`alpha_pattern`
as JSON, `use_rslora`). Options that change the arithmetic and are not implemented
(DoRA, fan_in_fan_out, bias training) are refused by name rather than ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from modelcache.runtime.errors import SwapRefused
from modelcache.runtime.lora import matches_target
from modelcache.runtime.untrusted_json import json_object, parse_json

T = TypeVar("T", int, float)

# PEFT options that would change y = Wx + s*BAx if set; refused rather than silently ignored.
UNSUPPORTED: dict[str, Any] = {
    "use_dora": False,
    "fan_in_fan_out": False,
    "bias": "none",
    "lora_bias": False,
}


class LayerSettings(Protocol):
    """What validation asks of settings, per layer: one adapter's (`AdapterSettings`) or a
    pipeline's, one per component (`modelcache.runtime.diffusers_pipeline`)."""

    def targets(self, layer: str) -> bool: ...

    def rank_for(self, layer: str) -> int: ...

    def alpha_for(self, layer: str) -> float: ...

    def rslora_for(self, layer: str) -> bool: ...

    def scaling_for(self, layer: str) -> float: ...

    def describe_targets(self, layer: str | None) -> str:
        """The target modules that apply to `layer` (None: all), for messages."""
        ...


# (adapter_config.json bytes or None, safetensors metadata, version dir) -> settings
SettingsReader = Callable[[bytes | None, Mapping[str, str], Path], LayerSettings]


@dataclass(frozen=True)
class AdapterSettings:
    rank: int
    alpha: float
    target_modules: tuple[str, ...] | str
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    use_rslora: bool = False

    def targets(self, layer: str) -> bool:
        return matches_target(layer, self.target_modules)

    def rank_for(self, layer: str) -> int:
        return _pattern_value(self.rank_pattern, layer, self.rank)

    def alpha_for(self, layer: str) -> float:
        return _pattern_value(self.alpha_pattern, layer, self.alpha)

    def rslora_for(self, layer: str) -> bool:
        del layer
        return self.use_rslora

    def scaling_for(self, layer: str) -> float:
        """PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        rank = self.rank_for(layer)
        alpha = self.alpha_for(layer)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank

    def describe_targets(self, layer: str | None) -> str:
        del layer
        shown = self.target_modules
        return (
            f"target_modules {shown!r}"
            if isinstance(shown, str)
            else f"target_modules {list(shown)!r}"
        )


def _pattern_value(patterns: Mapping[str, T], layer: str, default: T) -> T:
    """PEFT matches a pattern key as a suffix of the module name on a '.' boundary."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", layer):
            return value
    return default


def settings_from_config(data: bytes, *, where: str) -> AdapterSettings:
    """Parse a PEFT adapter_config.json."""
    return settings_from_mapping(json_object(data, "format", where), where=where)


def settings_from_mapping(config: Mapping[str, Any], *, where: str) -> AdapterSettings:
    """A PEFT LoraConfig as a mapping (adapter_config.json, or one component's diffusers
    adapter metadata); unsupported options are refused by name."""
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise SwapRefused("settings", f"{where}: peft_type {peft_type!r} is not LORA")
    for option, neutral in UNSUPPORTED.items():
        if config.get(option, neutral) not in (neutral, None):
            raise SwapRefused(
                "settings", f"{where}: {option}={config[option]!r} is not supported by the slots"
            )
    return _settings(config, where)


def settings_from_metadata(metadata: Mapping[str, str], *, where: str) -> AdapterSettings:
    """Parse the adapter settings from safetensors string metadata."""
    config: dict[str, Any] = {}
    for key in ("r", "lora_alpha", "use_rslora"):
        if key in metadata:
            config[key] = _scalar(metadata[key], key, where)
    for key in ("rank_pattern", "alpha_pattern"):
        if key in metadata:
            config[key] = parse_json(metadata[key], "settings", f"{where}: {key}")
    if "target_modules" in metadata:
        raw = metadata["target_modules"]
        listed = raw[:1] == "["
        config["target_modules"] = (
            parse_json(raw, "settings", f"{where}: target_modules") if listed else raw
        )
    return _settings(config, where)


def _scalar(text: str, key: str, where: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise SwapRefused("settings", f"{where}: {key}={text[:40]!r} is not a number") from None


def _settings(config: Mapping[str, Any], where: str) -> AdapterSettings:
    rank = config.get("r")
    alpha = config.get("lora_alpha", rank)
    targets = config.get("target_modules")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise SwapRefused("settings", f"{where}: r must be a positive integer, got {rank!r}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise SwapRefused("settings", f"{where}: lora_alpha must be a number, got {alpha!r}")
    if isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
        target_modules: tuple[str, ...] | str = tuple(targets)
    elif isinstance(targets, str) and targets:
        try:
            re.compile(targets)
        except re.error as error:
            raise SwapRefused("settings", f"{where}: target_modules regex: {error}") from None
        target_modules = targets
    else:
        raise SwapRefused(
            "settings", f"{where}: target_modules must be a list of names or a regex: {targets!r}"
        )
    rank_pattern = _mapping(config.get("rank_pattern"), "rank_pattern", int, where)
    alpha_pattern = _mapping(config.get("alpha_pattern"), "alpha_pattern", float, where)
    if any(r < 1 for r in rank_pattern.values()):
        raise SwapRefused("settings", f"{where}: rank_pattern has a rank below 1")
    use_rslora = config.get("use_rslora", False)
    if not isinstance(use_rslora, bool):
        raise SwapRefused("settings", f"{where}: use_rslora must be true or false")
    return AdapterSettings(
        rank=rank,
        alpha=float(alpha),
        target_modules=target_modules,
        rank_pattern={k: int(v) for k, v in rank_pattern.items()},
        alpha_pattern={k: float(v) for k, v in alpha_pattern.items()},
        use_rslora=use_rslora,
    )


def _mapping(value: object, key: str, kind: type, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    numeric = (int,) if kind is int else (int, float)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, numeric) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise SwapRefused("settings", f"{where}: {key} must map module names to numbers")
    return dict(value)
