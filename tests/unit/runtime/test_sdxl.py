"""SDXL with a LoRA on the unet and both text encoders, loaded by `pipe.load_lora_weights`:
every swap computes what a fresh pipeline loading the same version computes, in the same
storage, and a bad text_encoder_2 tensor changes nothing. A tiny `StableDiffusionXLPipeline`
built from config (random weights, a byte-level BPE tokenizer written here), no downloads."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("peft")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

from modelcache.runtime import (  # noqa: E402
    LoraRuntime,
    RuntimeConfig,
    SwapRefused,
    diffusers_keys,
    write_safetensors,
)
from modelcache.store import Store  # noqa: E402
from tests.unit.runtime.support import MODEL, install_version  # noqa: E402

MAX_RANK = 8
WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
PROMPT = "a red dress"
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
TEXT_LAYERS = 2
HIDDEN, PROJECTION, TIME_DIM, TOKENS = 16, 8, 4, 8
UNET = {
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 2 * HIDDEN,  # both encoders' hidden states, concatenated
    "attention_head_dim": 2,
    "norm_num_groups": 4,
    "use_linear_projection": True,
    # SDXL: pooled text_encoder_2 embeddings + 6 size/crop ids condition the time embedding
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TIME_DIM,
    "projection_class_embeddings_input_dim": 6 * TIME_DIM + PROJECTION,
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
SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
MERGES = ("r e", "re d</w>", "d r", "e s", "es s</w>")
SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def write_tokenizer(directory: Path) -> Path:
    """A CLIP byte-level BPE vocabulary: every byte alone and word-final, a few merges."""
    from tokenizers.pre_tokenizers import ByteLevel  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(ByteLevel.alphabet())
    tokens = [*alphabet, *(f"{c}</w>" for c in alphabet)]
    tokens += [merge.replace(" ", "") for merge in MERGES]
    tokens += SPECIAL
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return directory


VOCAB = 2 * 256 + len(MERGES) + len(SPECIAL)
BOS, EOS = VOCAB - 2, VOCAB - 1


def text_config() -> Any:
    return transformers.CLIPTextConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=24,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2,
        max_position_embeddings=TOKENS,
        projection_dim=PROJECTION,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
        hidden_act="gelu",
    )


@dataclass
class Components:
    unet: Any
    text_encoder: Any
    text_encoder_2: Any


def components() -> Components:
    """The same base weights every time."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**UNET)
    text_encoder = transformers.CLIPTextModel(text_config())
    text_encoder_2 = transformers.CLIPTextModelWithProjection(text_config())
    return Components(unet.eval(), text_encoder.eval(), text_encoder_2.eval())


def pipeline(tokenizer_dir: Path) -> Any:
    parts = components()
    torch.manual_seed(1)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(
        str(tokenizer_dir), local_files_only=True, model_max_length=TOKENS
    )
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=diffusers.AutoencoderKL(**VAE),
        text_encoder=parts.text_encoder,
        text_encoder_2=parts.text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=parts.unet,
        scheduler=diffusers.EulerDiscreteScheduler(**SCHEDULER),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: Any, request: AbstractContextManager[Any] | None = None) -> dict[str, Any]:
    """The text encoders' outputs as the unet gets them, and two denoising steps' latents."""
    with request or nullcontext(), torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
        latents = pipe(
            PROMPT,
            num_inference_steps=2,
            height=8,
            width=8,
            guidance_scale=1.0,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        ).images
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "latents": latents}


@dataclass(frozen=True)
class Spec:
    seed: int
    rank: int = MAX_RANK
    alpha: float = 16.0  # the unet's; the text encoders' is half
    text_targets: tuple[str, ...] = TEXT_TARGETS
    diffusers_format: bool = True

    @property
    def text_scale(self) -> float:
        return self.alpha / 2 / self.rank


VERSIONS = {
    "v1": Spec(1),
    # PEFT's own key names, another alpha, only q/v in the text encoders
    "v2": Spec(2, alpha=4.0, text_targets=("q_proj", "v_proj"), diffusers_format=False),
    "v3": Spec(3, rank=2, alpha=2.0),  # a lower rank: zero-padded
}


@dataclass(frozen=True)
class Trained:
    """What a trainer gives `save_lora_weights`."""

    unet: dict[str, torch.Tensor]
    text_encoder: dict[str, torch.Tensor]
    text_encoder_2: dict[str, torch.Tensor]
    unet_config: LoraConfig
    text_config: LoraConfig


def train(spec: Spec) -> Trained:
    """PEFT adapters on all three models with random weights, as dreambooth_lora_sdxl keeps
    them: `get_peft_model_state_dict`, then (by default) `convert_state_dict_to_diffusers`."""
    from diffusers.utils import convert_state_dict_to_diffusers  # noqa: PLC0415

    parts = components()
    unet_config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(UNET_TARGETS))
    text_config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha / 2, target_modules=list(spec.text_targets)
    )
    parts.unet.add_adapter(unet_config)
    parts.text_encoder.add_adapter(text_config)
    parts.text_encoder_2.add_adapter(text_config)
    generator = torch.Generator().manual_seed(spec.seed)
    layers = []
    for model in (parts.unet, parts.text_encoder, parts.text_encoder_2):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if ".lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        state = get_peft_model_state_dict(model)
        layers.append(convert_state_dict_to_diffusers(state) if spec.diffusers_format else state)
    return Trained(*layers, unet_config=unet_config, text_config=text_config)


def save(trained: Trained, directory: Path) -> Path:
    diffusers.StableDiffusionXLPipeline.save_lora_weights(
        directory,
        unet_lora_layers=trained.unet,
        text_encoder_lora_layers=trained.text_encoder,
        text_encoder_2_lora_layers=trained.text_encoder_2,
        unet_lora_adapter_metadata=trained.unet_config.to_dict(),
        text_encoder_lora_adapter_metadata=trained.text_config.to_dict(),
        text_encoder_2_lora_adapter_metadata=trained.text_config.to_dict(),
    )
    return directory / WEIGHTS


def rewrite(
    weights: Path,
    out: Path,
    change: dict[str, torch.Tensor] | None = None,
    rename: tuple[str, str] | None = None,
) -> Path:
    """The same file (header metadata included) with some tensors replaced, or keys renamed."""
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if rename is not None:
        tensors = {key.replace(*rename): tensor for key, tensor in tensors.items()}
    tensors.update(change or {})
    write_safetensors(out, tensors, metadata)
    return out


def keys(weights: Path) -> list[str]:
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(weights), "pt") as handle:
        return list(handle.keys())


def reference(tokenizer_dir: Path, weights: Path) -> dict[str, Any]:
    """diffusers' own way: a fresh pipeline, `load_lora_weights(that version)`."""
    pipe = pipeline(tokenizer_dir)
    pipe.load_lora_weights(str(weights.parent), weight_name=weights.name)
    return generate(pipe)


def lora_params(pipe: Any) -> dict[str, torch.Tensor]:
    return {
        f"{component}.{name}": param
        for component in ("unet", "text_encoder", "text_encoder_2")
        for name, param in getattr(pipe, component).named_parameters()
        if ".lora_" in name
    }


def pointers(pipe: Any) -> dict[str, int]:
    return {name: param.data_ptr() for name, param in lora_params(pipe).items()}


def version(store: Store, name: str, weights: Path) -> Path:
    return install_version(store, name, {WEIGHTS: weights.read_bytes()})


def assert_same(out: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    for key, value in expected.items():
        torch.testing.assert_close(out[key], value, msg=lambda m, k=key: f"{what} {k}: {m}")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {name: save(train(spec), tmp_path / name) for name, spec in VERSIONS.items()}


@pytest.fixture
def served(tokenizer_dir: Path, files: dict[str, Path]) -> tuple[Any, LoraRuntime]:
    """A pipeline with v1 loaded by diffusers under an adapter name, and its runtime."""
    pipe = pipeline(tokenizer_dir)
    pipe.load_lora_weights(str(files["v1"].parent), adapter_name="garment")
    return pipe, LoraRuntime.for_pipeline(pipe, RuntimeConfig(model=str(MODEL)))


def test_slots_cover_the_unet_and_both_text_encoders(served: tuple[Any, LoraRuntime]) -> None:
    _, runtime = served
    slots = runtime.slots.slots
    per_component = {
        component: sorted(name for name in slots if name.startswith(f"{component}."))
        for component in ("unet", "text_encoder", "text_encoder_2")
    }
    for component in ("text_encoder", "text_encoder_2"):
        assert per_component[component] == sorted(
            f"{component}.encoder.layers.{i}.self_attn.{t}"
            for i in range(TEXT_LAYERS)
            for t in TEXT_TARGETS
        )
    assert per_component["unet"]
    assert len(slots) == sum(map(len, per_component.values()))
    assert {s.max_rank for s in slots.values()} == {MAX_RANK}
    layer = "text_encoder_2.encoder.layers.0.self_attn.q_proj"
    for key in (
        "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
        "text_encoder_2.encoder.layers.0.self_attn.q_proj.lora_A.weight",
    ):
        assert diffusers_keys(key) == (layer, "A")


def test_swaps_match_a_fresh_pipeline_and_keep_storage(
    served: tuple[Any, LoraRuntime], files: dict[str, Path], store: Store, tokenizer_dir: Path
) -> None:
    pipe, runtime = served
    expected = {name: reference(tokenizer_dir, weights) for name, weights in files.items()}
    paths = {name: version(store, name, weights) for name, weights in files.items()}
    before = pointers(pipe)
    assert {name.partition(".")[0] for name in before} == {
        "unet",
        "text_encoder",
        "text_encoder_2",
    }
    previous = generate(pipe, runtime.request())
    assert_same(previous, expected["v1"], "as loaded")
    q_proj = pipe.text_encoder_2.text_model.encoder.layers[0].self_attn.q_proj
    k_proj_a = lora_params(pipe)[
        "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.lora_A.garment.weight"
    ]
    for step, name in enumerate(["v1", "v2", "v3", "v1"]):
        runtime.swap(name, paths[name])
        out = generate(pipe, runtime.request())
        assert_same(out, expected[name], name)
        assert pointers(pipe) == before, name
        assert runtime.live_version == name
        if step:  # each text encoder's LoRA is live: what the unet is given changed
            for key, value in out.items():
                assert not torch.allclose(value, previous[key]), f"{name}: {key} unchanged"
        previous = out
        assert q_proj.scaling["garment"] == pytest.approx(VERSIONS[name].text_scale)
        assert bool(k_proj_a.any()) == ("k_proj" in VERSIONS[name].text_targets), name


def test_text_model_prefixed_keys_load_the_same(
    served: tuple[Any, LoraRuntime], files: dict[str, Path], store: Store, tokenizer_dir: Path
) -> None:
    """LoRAs trained before transformers flattened CLIPTextModel name its layers
    `text_encoder.text_model.encoder...`; diffusers still loads them, and so do the slots."""
    pipe, runtime = served
    old = files["v3"].parent / "old" / WEIGHTS
    old.parent.mkdir()
    rewrite(files["v3"], old, rename=("text_encoder.encoder.", "text_encoder.text_model.encoder."))
    key = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight"
    assert key in keys(old)
    runtime.swap("old", version(store, "old", old))
    out = generate(pipe)
    assert_same(out, reference(tokenizer_dir, old), "old")
    assert_same(out, reference(tokenizer_dir, files["v3"]), "v3")


def test_a_wrong_text_encoder_2_shape_is_refused_and_changes_nothing(
    served: tuple[Any, LoraRuntime], files: dict[str, Path], store: Store
) -> None:
    pipe, runtime = served
    runtime.swap("v1", version(store, "v1", files["v1"]))
    out, before = generate(pipe), pointers(pipe)
    key = (
        "text_encoder_2.text_model.encoder.layers.1.self_attn.v_proj.lora_linear_layer.down.weight"
    )
    bad = rewrite(files["v3"], files["v3"].parent / "bad.safetensors", {key: torch.zeros(2, 15)})
    # the slot drops CLIP's text_model. level, as diffusers does (see diffusers_pipeline)
    layer = "text_encoder_2.encoder.layers.1.self_attn.v_proj"
    message = rf"lora_A of layer {layer} has shape \[2, 15\], expected \[2, 16\]"
    with pytest.raises(SwapRefused, match=message) as refused:
        runtime.swap("bad", version(store, "bad", bad))
    assert refused.value.kind == "shape"
    assert runtime.live_version == "v1"
    assert pointers(pipe) == before
    for name, value in generate(pipe).items():
        assert torch.equal(value, out[name]), name
