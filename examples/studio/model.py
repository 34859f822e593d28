"""A tiny image generator in the spirit of SDXL + a LoRA: built from config, random weights.

`Denoiser` is a small transformer over image patches: each block has attention with
`to_q`, `to_k`, `to_v`, `to_out` projections (the layers SDXL LoRAs target) and a
feed-forward `ff.up`/`ff.down`, modulated by the timestep. `generate` runs a fixed number
of Euler steps from seeded noise to a `channels x size x size` "image". Nothing is
downloaded: the weights come from `StudioConfig.seed`, so every process that builds the
same config gets the same model, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file
from torch import nn

from modelcache.runtime import LoraLinear, add_lora

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class StudioConfig:
    """The model's shape; `python -m examples.studio --config studio.json` reads these keys."""

    channels: int = 4  # latent channels, as SDXL's VAE latents
    size: int = 16  # image side, in pixels
    patch: int = 4  # patch side: (size / patch)^2 tokens
    dim: int = 64
    heads: int = 4
    blocks: int = 3
    ff_mult: int = 2
    steps: int = 20  # default denoising steps per generation
    max_steps: int = 200  # the most a request may ask for
    seed: int = 0  # the base weights
    max_rank: int = 16  # LoRA slot size: adapters of rank <= max_rank swap in
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out", "up", "down")

    def __post_init__(self) -> None:
        checks = {
            "size must be a multiple of patch": self.size % self.patch == 0,
            "dim must be a multiple of heads": self.dim % self.heads == 0,
            "sizes must be positive": min(self.channels, self.size, self.patch, self.dim) > 0,
            "steps must be within 1..max_steps": 1 <= self.steps <= self.max_steps,
            "max_rank must be >= 1": self.max_rank >= 1,
            "blocks and heads must be >= 1": min(self.blocks, self.heads, self.ff_mult) >= 1,
        }
        failed = [what for what, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid studio config: {'; '.join(failed)}")

    @classmethod
    def from_file(cls, path: Path) -> StudioConfig:
        """A JSON object of StudioConfig fields; unknown keys are an error, not ignored."""
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read studio config {path}: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"studio config {path} is not a JSON object")
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config") -> StudioConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        if "targets" in data:
            data = {**data, "targets": tuple(data["targets"])}
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = list(self.targets)
        return data

    @property
    def tokens(self) -> int:
        return (self.size // self.patch) ** 2

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch * self.patch


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
        out: torch.Tensor = self.to_out((weights @ v).transpose(1, 2).reshape(b, t, d))
        return out


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.up = nn.Linear(dim, dim * mult)
        self.down = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down(F.gelu(self.up(x)))
        return out


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult)
        self.time = nn.Linear(dim, 2 * dim)  # shift and scale from the timestep

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.time(temb).unsqueeze(1).chunk(2, dim=-1)
        x = x + self.attn(self.norm1(x) * (1 + scale) + shift)
        out: torch.Tensor = x + self.ff(self.norm2(x))
        return out


class Denoiser(nn.Module):
    """Predicts the velocity that carries noise (t=1) to an image (t=0)."""

    def __init__(self, config: StudioConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_in = nn.Linear(config.patch_dim, dim)
        self.position = nn.Parameter(torch.randn(1, config.tokens, dim) * 0.02)
        self.time_in = nn.Linear(dim, dim)
        self.time_out = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(
            Block(dim, config.heads, config.ff_mult) for _ in range(config.blocks)
        )
        self.norm_out = nn.LayerNorm(dim)
        self.patch_out = nn.Linear(dim, config.patch_dim)

    def forward(self, image: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        b, n = image.shape[0], c.size // c.patch
        patches = image.view(b, c.channels, n, c.patch, n, c.patch).permute(0, 2, 4, 1, 3, 5)
        x = self.patch_in(patches.reshape(b, n * n, c.patch_dim)) + self.position
        temb = self.time_out(F.silu(self.time_in(timestep_embedding(t, c.dim, x.dtype))))
        for block in self.blocks:
            x = block(x, temb)
        out = self.patch_out(self.norm_out(x)).view(b, n, n, c.channels, c.patch, c.patch)
        velocity: torch.Tensor = out.permute(0, 3, 1, 4, 2, 5).reshape(image.shape)
        return velocity


def timestep_embedding(t: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * 1000 * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)


def build_model(
    config: StudioConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Denoiser:
    """The base model from `config.seed`, LoRA slots on `config.targets`, on its device.

    The weights are made on the CPU in float32 (the same numbers whatever the device),
    then moved: build the runtime on the model this returns, and do not move it again."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Denoiser(config)
    add_lora(model, config.targets, max_rank=config.max_rank)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


@torch.no_grad()
def generate(model: Denoiser, *, seed: int, steps: int) -> torch.Tensor:
    """`steps` Euler steps from the noise of `seed`; the image as float32 on the CPU.

    The noise is drawn on the CPU, so a seed gives the same start on every device. The
    copy back to the CPU waits for the device, so the image is complete on return."""
    c = model.config
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, c.channels, c.size, c.size, generator=generator)
    x = noise.to(device=parameter.device, dtype=parameter.dtype)
    for i in range(steps):
        t = torch.full((1,), 1.0 - i / steps, device=x.device)
        x = x - model(x, t) / steps
    return torch.tanh(x[0]).float().cpu()


def image_sha256(image: torch.Tensor) -> str:
    """The digest of the image's float32 bytes: equal digests, equal images."""
    data = image.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(bytes(data.flatten().view(torch.uint8).tolist())).hexdigest()


def image_stats(image: torch.Tensor) -> dict[str, float]:
    return {
        "mean": round(float(image.mean()), 6),
        "std": round(float(image.std()), 6),
        "min": round(float(image.min()), 6),
        "max": round(float(image.max()), 6),
    }


def apply_adapter(model: Denoiser, directory: Path) -> Denoiser:
    """Write a PEFT LoRA straight into the model's slots, without modelcache.runtime.

    The reference a served generation is compared with: the same model, loaded by the
    plainest reader there is (safetensors' own), with PEFT's scaling alpha / r."""
    settings = json.loads((directory / CONFIG_FILE).read_text())
    for option in ("rank_pattern", "alpha_pattern", "use_rslora", "use_dora"):
        if settings.get(option):
            raise ValueError(f"{directory}: {option} is not supported by this reference loader")
    rank, alpha = int(settings["r"]), float(settings["lora_alpha"])
    tensors = load_file(str(directory / ADAPTER_FILE))
    layers = lora_layers(model)
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_A.zero_()
            layer.lora_B.zero_()
            layer.lora_scaling.zero_()
        for key, tensor in tensors.items():
            name, _, part = key.removeprefix(PEFT_PREFIX).rpartition(".lora_")
            layer = layers[name]
            if part == "A.weight":
                layer.lora_A[:rank] = tensor
            elif part == "B.weight":
                layer.lora_B[:, :rank] = tensor
            else:
                raise ValueError(f"{directory}: unexpected tensor {key}")
            layer.lora_scaling.fill_(alpha / rank)
    return model
