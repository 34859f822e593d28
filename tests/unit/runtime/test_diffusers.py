"""A diffusers pipeline with a LoRA from `pipe.load_lora_weights(...)`, served by the runtime:
swaps compute what a fresh pipeline loading the same file computes, in the same storage,
and bad versions change nothing. Tiny unet and VAE from config, random weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("peft")
diffusers = pytest.importorskip("diffusers")
from peft import LoraConfig  # noqa: E402

from modelcache.runtime import (  # noqa: E402
    LoraRuntime,
    RuntimeConfig,
    SwapRefused,
    diffusers_keys,
    write_safetensors,
)
from modelcache.store import Store  # noqa: E402
from tests.unit.runtime.support import MODEL, install_version, write_version  # noqa: E402

MAX_RANK = 8
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
LAYER = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
UNET = {
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 16,
    "attention_head_dim": 2,
    "norm_num_groups": 4,
}
VAE = {
    "block_out_channels": (8,),
    "down_block_types": ("DownEncoderBlock2D",),
    "up_block_types": ("UpDecoderBlock2D",),
    "latent_channels": 4,
    "norm_num_groups": 4,
    "layers_per_block": 1,
    "sample_size": 8,
}


def pipeline() -> Any:
    """The same base weights every time; no tokenizer or text encoder (prompt embeddings in)."""
    torch.manual_seed(0)
    pipe = diffusers.StableDiffusionPipeline(
        vae=diffusers.AutoencoderKL(**VAE),
        text_encoder=None,
        tokenizer=None,
        unet=diffusers.UNet2DConditionModel(**UNET),
        scheduler=diffusers.DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: Any) -> torch.Tensor:
    embeds = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images: torch.Tensor = pipe(
            prompt_embeds=embeds,
            num_inference_steps=2,
            height=8,
            width=8,
            guidance_scale=1.0,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        ).images
    return images


def lora_shapes() -> dict[str, tuple[int, int]]:
    unet = diffusers.UNet2DConditionModel(**UNET)
    return {
        name: (m.in_features, m.out_features)
        for name, m in unet.named_modules()
        if isinstance(m, nn.Linear) and any(name.endswith(f".{t}") for t in TARGETS)
    }


SHAPES = lora_shapes()


def save_lora(
    directory: Path,
    seed: int,
    *,
    rank: int = MAX_RANK,
    alpha: float = 16.0,
    targets: tuple[str, ...] = TARGETS,
    metadata: bool = True,
) -> Path:
    """A LoRA file written by diffusers' own `save_lora_weights`, as trainers write it."""
    generator = torch.Generator().manual_seed(seed)
    layers: dict[str, torch.Tensor] = {}
    for name, (fan_in, fan_out) in SHAPES.items():
        if any(name.endswith(f".{t}") for t in targets):
            layers[f"{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) * 0.3
            layers[f"{name}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.3
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets))
    diffusers.StableDiffusionPipeline.save_lora_weights(
        directory,
        unet_lora_layers=layers,
        unet_lora_adapter_metadata=config.to_dict() if metadata else None,
    )
    return directory / WEIGHTS


def reference(weights: Path) -> torch.Tensor:
    """diffusers' own way: a fresh pipeline, `load_lora_weights(file)`."""
    pipe = pipeline()
    pipe.load_lora_weights(str(weights.parent), weight_name=weights.name)
    return generate(pipe)


def pointers(pipe: Any) -> dict[str, int]:
    unet = pipe.unet
    return {name: p.data_ptr() for name, p in [*unet.named_parameters(), *unet.named_buffers()]}


def version(store: Store, name: str, weights: Path) -> Path:
    return install_version(store, name, {WEIGHTS: weights.read_bytes()})


@pytest.fixture
def served(tmp_path: Path) -> tuple[Any, LoraRuntime]:
    """A pipeline with a rank-MAX_RANK LoRA loaded by diffusers, and its runtime."""
    pipe = pipeline()
    pipe.load_lora_weights(str(save_lora(tmp_path / "initial", 0)), adapter_name="garment")
    return pipe, LoraRuntime.for_pipeline(pipe, RuntimeConfig(model=str(MODEL)))


def test_slots_are_named_by_component_as_diffusers_saves_keys(
    served: tuple[Any, LoraRuntime],
) -> None:
    _, runtime = served
    assert sorted(runtime.slots.slots) == sorted(f"unet.{name}" for name in SHAPES)
    assert {s.max_rank for s in runtime.slots.slots.values()} == {MAX_RANK}
    assert diffusers_keys(f"{LAYER}.lora_A.weight") == (LAYER, "A")


def test_swaps_match_a_fresh_pipeline_and_keep_storage(
    served: tuple[Any, LoraRuntime], store: Store, tmp_path: Path
) -> None:
    pipe, runtime = served
    base = generate(pipeline())
    before = pointers(pipe)
    files = {
        "v1": save_lora(tmp_path / "v1", 1),
        "v2": save_lora(tmp_path / "v2", 2, rank=4, alpha=2.0),  # smaller rank: zero-padded
        "v3": save_lora(tmp_path / "v3", 3, rank=2, targets=("to_q", "to_v")),
    }
    paths = {v: version(store, v, f) for v, f in files.items()}
    expected = {v: reference(f) for v, f in files.items()}
    for name in ["v1", "v2", "v3", "v1", "v2"]:
        runtime.swap(name, paths[name])
        out = generate(pipe)
        torch.testing.assert_close(out, expected[name])
        assert not torch.allclose(out, base, atol=1e-4), "the swap changed nothing"
        assert pointers(pipe) == before, name
    layer = pipe.unet.get_submodule(LAYER.removeprefix("unet."))
    assert layer.scaling["garment"] == pytest.approx(0.5)
    assert not layer.lora_A["garment"].weight[4:].any()


def test_older_lora_down_up_keys_load_the_same(
    served: tuple[Any, LoraRuntime], store: Store, tmp_path: Path
) -> None:
    """The pre-PEFT diffusers names map onto the same slots."""
    pipe, runtime = served
    weights = save_lora(tmp_path / "new", 4, rank=4)
    runtime.swap("new", version(store, "new", weights))
    expected = generate(pipe)
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
        tensors = {
            key.replace(".lora_A.", ".lora.down.").replace(
                ".lora_B.", ".lora.up."
            ): handle.get_tensor(key)
            for key in handle.keys()  # noqa: SIM118 - safe_open is not a mapping
        }
    old = tmp_path / "old.safetensors"
    write_safetensors(old, tensors, metadata)
    runtime.swap("old", install_version(store, "old", {WEIGHTS: old.read_bytes()}))
    torch.testing.assert_close(generate(pipe), expected)


def with_tensors(tmp_path: Path, change: dict[str, torch.Tensor | None]) -> Path:
    from safetensors import safe_open  # noqa: PLC0415

    weights = save_lora(tmp_path / "good", 9, rank=4)
    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    for key, tensor in change.items():
        if tensor is None:
            del tensors[key]
        else:
            tensors[key] = tensor
    out = tmp_path / "bad.safetensors"
    write_safetensors(out, tensors, metadata)
    return out


KEY_A, KEY_B = f"{LAYER}.lora_A.weight", f"{LAYER}.lora_B.weight"
BAD: dict[str, tuple[Any, str, str]] = {
    "shape": (
        lambda tmp: with_tensors(tmp, {KEY_A: torch.zeros(4, 15)}),
        "shape",
        rf"lora_A of layer {LAYER} has shape \[4, 15\], expected \[4, 16\]",
    ),
    "dtype": (
        lambda tmp: with_tensors(tmp, {KEY_B: torch.zeros(16, 4, dtype=torch.float16)}),
        "dtype",
        rf"lora_B of layer {LAYER} is F16; the slot holds F32",
    ),
    "rank above the slot": (
        lambda tmp: save_lora(tmp / "big", 9, rank=MAX_RANK * 2),
        "rank",
        rf"lora rank {MAX_RANK * 2} exceeds slot rank {MAX_RANK} for layer unet\.",
    ),
    "missing key": (
        lambda tmp: with_tensors(tmp, {KEY_B: None}),
        "key",
        rf"missing key '{LAYER}.lora_B.weight'",
    ),
    "no settings": (
        lambda tmp: save_lora(tmp / "bare", 9, metadata=False),
        "settings",
        r"no lora_adapter_metadata in the safetensors header and no adapter_config.json",
    ),
}


def live_v1(served: tuple[Any, LoraRuntime], store: Store, tmp_path: Path) -> torch.Tensor:
    pipe, runtime = served
    weights = save_lora(tmp_path / "v1", 1)
    runtime.swap("v1", version(store, "v1", weights))
    return generate(pipe)


def assert_unchanged(
    served: tuple[Any, LoraRuntime], out: torch.Tensor, before: dict[str, int]
) -> None:
    pipe, runtime = served
    assert runtime.live_version == "v1"
    assert torch.equal(generate(pipe), out)
    assert pointers(pipe) == before


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_version_is_refused_and_changes_nothing(
    case: str, served: tuple[Any, LoraRuntime], store: Store, tmp_path: Path
) -> None:
    out = live_v1(served, store, tmp_path)
    before = pointers(served[0])
    make, kind, reason = BAD[case]
    path = version(store, "v2", make(tmp_path))
    with pytest.raises(SwapRefused, match=reason) as refused:
        served[1].swap("v2", path)
    assert refused.value.kind == kind
    assert_unchanged(served, out, before)


def test_a_failing_checksum_is_refused(
    served: tuple[Any, LoraRuntime], store: Store, tmp_path: Path
) -> None:
    out = live_v1(served, store, tmp_path)
    before = pointers(served[0])
    weights = save_lora(tmp_path / "v2", 2)
    path = write_version(store.root / "v2", "v2", {WEIGHTS: weights.read_bytes()})
    data = bytearray((path / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(SwapRefused, match=r"sha256 [0-9a-f]{64} does not match") as refused:
        served[1].swap("v2", path)
    assert refused.value.kind == "checksum"
    assert_unchanged(served, out, before)


def test_settings_from_an_adapter_config_beside_the_weights(
    served: tuple[Any, LoraRuntime], store: Store, tmp_path: Path
) -> None:
    """No header metadata: a plain PEFT adapter_config.json applies to every component."""
    pipe, runtime = served
    weights = save_lora(tmp_path / "v5", 5, rank=4, alpha=8.0, metadata=False)
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8.0, "target_modules": list(TARGETS)}
    files = {WEIGHTS: weights.read_bytes(), "adapter_config.json": json.dumps(config).encode()}
    runtime.swap("v5", install_version(store, "v5", files))
    with_metadata = save_lora(tmp_path / "v5m", 5, rank=4, alpha=8.0)
    torch.testing.assert_close(generate(pipe), reference(with_metadata))


def test_a_pipeline_without_lora_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no component of StableDiffusionPipeline holds LoRA"):
        LoraRuntime.for_pipeline(pipeline(), RuntimeConfig(model=str(MODEL)))
