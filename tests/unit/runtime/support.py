"""Tiny models and adapter versions for runtime tests: built from config, random, no downloads."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from modelcache.api.manifest import MANIFEST_NAME, Manifest, ManifestFile
from modelcache.fs import hash_file
from modelcache.runtime import LoraLinear, add_lora, write_safetensors
from modelcache.store import ModelRef, Store
from tests.unit.store.support import install

DIM, HIDDEN, MAX_RANK = 16, 24, 8
TARGETS = ("to_q", "to_v", "up")
MODEL = ModelRef("studio", "garment-lora")
ADAPTER = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_q = nn.Linear(DIM, DIM)
        self.to_v = nn.Linear(DIM, DIM)
        self.up = nn.Linear(DIM, HIDDEN)
        self.down = nn.Linear(HIDDEN, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = torch.softmax(self.to_q(x) @ x.transpose(-1, -2), dim=-1) @ self.to_v(x)
        out: torch.Tensor = x + attn + self.down(torch.relu(self.up(x)))
        return out


class TinyNet(nn.Module):
    def __init__(self, dtype: torch.dtype = torch.float32, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(DIM, 4)
        self.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.head(x)
        return out


def build(dtype: torch.dtype = torch.float32, max_rank: int = MAX_RANK) -> TinyNet:
    """The same base weights every time; LoRA slots on to_q, to_v and up."""
    model = TinyNet(dtype)
    add_lora(model, TARGETS, max_rank=max_rank)
    return model.eval()


def slot_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]


@dataclass(frozen=True)
class Adapter:
    """A LoRA as PEFT saves it: tensors under `base_model.model.<layer>.lora_{A,B}.weight`."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, object]
    rank: int
    alpha: float

    def files(self, *, metadata: Mapping[str, str] | None = None, tmp: Path) -> dict[str, bytes]:
        path = tmp / f"adapter-{id(self)}.safetensors"
        write_safetensors(path, self.tensors, metadata)
        files = {ADAPTER: path.read_bytes()}
        if self.config:
            files[CONFIG] = json.dumps(self.config).encode()
        return files

    def layer(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = f"base_model.model.{name}"
        return self.tensors[f"{prefix}.lora_A.weight"], self.tensors[f"{prefix}.lora_B.weight"]


def make_adapter(
    seed: int,
    *,
    rank: int = MAX_RANK,
    alpha: float = 16.0,
    dtype: torch.dtype = torch.float32,
    targets: tuple[str, ...] = TARGETS,
) -> Adapter:
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in build().named_modules():
        if isinstance(module, LoraLinear) and name.rsplit(".", 1)[-1] in targets:
            prefix = f"base_model.model.{name}"
            a = torch.randn(rank, module.in_features, generator=generator) * 0.3
            b = torch.randn(module.out_features, rank, generator=generator) * 0.3
            tensors[f"{prefix}.lora_A.weight"] = a.to(dtype)
            tensors[f"{prefix}.lora_B.weight"] = b.to(dtype)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(targets)}
    return Adapter(tensors, config, rank, alpha)


def expected_model(adapter: Adapter, dtype: torch.dtype = torch.float32) -> TinyNet:
    """A model freshly built with `adapter` applied directly to its modules (no runtime)."""
    model = build(dtype)
    with torch.no_grad():
        for name in slot_names(model):
            layer = model.get_submodule(name)
            assert isinstance(layer, LoraLinear)
            key = f"base_model.model.{name}.lora_A.weight"
            if key not in adapter.tensors:
                continue
            a, b = adapter.layer(name)
            layer.lora_A[: a.shape[0]] = a
            layer.lora_B[:, : b.shape[1]] = b
            layer.lora_scaling.fill_(adapter.alpha / adapter.rank)
    return model


def merged_model(adapter: Adapter) -> TinyNet:
    """The plain math: W + alpha/r * B @ A folded into the base weights (float64)."""
    model = build()
    with torch.no_grad():
        for name in slot_names(model):
            if f"base_model.model.{name}.lora_A.weight" not in adapter.tensors:
                continue
            layer = model.get_submodule(name)
            assert isinstance(layer, LoraLinear)
            a, b = adapter.layer(name)
            delta = (b.double() @ a.double()) * (adapter.alpha / adapter.rank)
            layer.base.weight.copy_((layer.base.weight.double() + delta).float())
    return model


def inputs(seed: int = 7, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(3, 5, DIM, generator=torch.Generator().manual_seed(seed)).to(dtype)


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(x)
        return out


def install_version(store: Store, version: str, files: Mapping[str, bytes]) -> Path:
    """Into the real L2 store, as a pull would (`current` is not flipped)."""
    install(store, MODEL, version, files)
    return store.version_path(MODEL, version)


def write_version(directory: Path, version: str, files: Mapping[str, bytes]) -> Path:
    """A version dir laid out as L2 holds it, written by hand (so tests can tamper with it)."""
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    entries = []
    for name in files:
        digest = hash_file(directory / name)
        entries.append(
            ManifestFile(path=name, size=digest.size, sha256=digest.sha256, crc64=str(digest.crc64))
        )
    manifest = Manifest(
        version=version, created=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), files=tuple(entries)
    )
    (directory / MANIFEST_NAME).write_bytes(manifest.to_json())
    return directory
