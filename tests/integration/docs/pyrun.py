"""Runs one of the docs' Python snippets as a reader's program would, in a process of its
own: `python -m tests.integration.docs.pyrun NAME SNIPPET WORK PORT`.

Each scenario supplies what the snippet takes from the reader's own program (`pipe`,
`build_model`, `base`, `prompt`: tiny models built from config, nothing downloaded) and
the node's cache under WORK/root (the snippet's `/var/lib/modelcache`, filled in by the
test), runs the snippet's code unchanged otherwise, then checks what the docs promise:
a reload call over real HTTP to the server the snippet started on PORT answers 200 and
swaps, or an in-process swap goes live. Prints SNIPPET OK at the end.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelcache.api.names import ModelRef
from modelcache.runtime import write_safetensors
from modelcache.store import Store
from tests.unit.runtime.support import install_version, write_version

MODEL = ModelRef("studio", "garment-lora")  # as every snippet names it
PROMPT = "a red dress"
Namespace = dict[str, Any]


def reload(port: int, version: str) -> dict[str, Any]:
    """The agent's call: POST {"model", "version"}; the parsed answer, which must be a 200."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/modelcache/reload",
        data=json.dumps({"model": str(MODEL), "version": version}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback
        assert answer.status == 200, answer.status
        body: dict[str, Any] = json.loads(answer.read())
    assert body["ok"] is True, body
    assert body["live_version"] == version, body
    return body


# --- the README's inference pod and runtime.md's diffusers pipeline: a tiny SDXL ---------


def _sdxl_versions(work: Path, half: bool) -> Store:
    """Two LoRA versions for the tiny SDXL, as `save_lora_weights` writes them, in the
    node's cache; `current` names v1."""
    from tests.unit.runtime import test_sdxl as sdxl  # noqa: PLC0415 - diffusers is heavy

    store = Store(work / "root")
    for version, spec in (("v1", sdxl.Spec(1)), ("v2", sdxl.Spec(3, rank=2, alpha=2.0))):
        trained = sdxl.train(spec)
        if half:  # the slots take no implicit casts: a float16 pipeline gets float16 files
            trained = replace(
                trained,
                unet=_half(trained.unet),
                text_encoder=_half(trained.text_encoder),
                text_encoder_2=_half(trained.text_encoder_2),
            )
        weights = sdxl.save(trained, work / f"lora-{version}")
        install_version(store, version, {sdxl.WEIGHTS: weights.read_bytes()})
    store.flip(MODEL, "v1")
    return store


def _half(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: tensor.half() for key, tensor in tensors.items()}


def inference_pod(work: Path, port: int) -> tuple[Namespace, Callable[[Namespace], None]]:
    from tests.unit.runtime import test_sdxl as sdxl  # noqa: PLC0415

    store = _sdxl_versions(work, half=False)
    pipe = sdxl.pipeline(sdxl.write_tokenizer(work / "tokenizer"))

    def check(namespace: Namespace) -> None:
        assert namespace["image"].size == (8, 8), namespace["image"]
        reload(port, "v1")
        store.flip(MODEL, "v2")
        reload(port, "v2")
        with namespace["runtime"].request() as version:
            assert version == "v2"

    return {"pipe": pipe, "prompt": PROMPT}, check


def diffusers_pipeline(work: Path, port: int) -> tuple[Namespace, Callable[[Namespace], None]]:
    from tests.unit.runtime import test_sdxl as sdxl  # noqa: PLC0415

    del port  # no reload endpoint in this snippet
    store = _sdxl_versions(work, half=True)
    base = work / "sdxl-base"
    sdxl.pipeline(sdxl.write_tokenizer(work / "tokenizer")).save_pretrained(base)

    def check(namespace: Namespace) -> None:
        runtime, pipe = namespace["runtime"], namespace["pipe"]
        assert namespace["image"].size == (8, 8), namespace["image"]
        result = runtime.swap("v2", store.version_path(MODEL, "v2"))
        assert result.version == "v2"
        with runtime.request() as version, torch.no_grad():
            pipe(PROMPT, num_inference_steps=2, output_type="latent")
            assert version == "v2"

    return {"base": str(base), "prompt": PROMPT}, check


# --- runtime.md's torch module -------------------------------------------------------------

DIM = 16


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Linear(DIM, DIM) for _ in range(3))
        self.to_out = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.to_q(x) @ self.to_k(x).transpose(-1, -2), dim=-1)
        out: torch.Tensor = x + self.to_out(weights @ self.to_v(x))
        return out


def build_model() -> nn.Module:
    """The reader's own torch module."""
    torch.manual_seed(0)
    return nn.Sequential(Attention(), Attention()).eval()


def _adapter(model: nn.Module, rank: int, dtype: torch.dtype) -> dict[str, bytes]:
    """A PEFT-layout adapter for the LoraLinear layers of `model`."""
    from modelcache.runtime import LoraLinear  # noqa: PLC0415

    generator = torch.Generator().manual_seed(rank)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in model.named_modules():
        if isinstance(layer, LoraLinear):
            prefix = f"base_model.model.{name}"
            a = torch.randn(rank, layer.in_features, generator=generator) * 0.1
            b = torch.randn(layer.out_features, rank, generator=generator) * 0.1
            tensors[f"{prefix}.lora_A.weight"] = a.to(dtype)
            tensors[f"{prefix}.lora_B.weight"] = b.to(dtype)
    return {
        "adapter_model.safetensors": _safetensors(tensors),
        "adapter_config.json": _config(rank),
    }


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "adapter.safetensors"
        write_safetensors(path, tensors)
        return path.read_bytes()


def _config(rank: int) -> bytes:
    targets = ["to_q", "to_k", "to_v"]
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": targets}
    return json.dumps(config).encode()


def torch_module(work: Path, port: int) -> tuple[Namespace, Callable[[Namespace], None]]:
    store = Store(work / "root")

    def pipeline(prompt: str) -> torch.Tensor:
        """The reader's request: the model over an input made from the prompt."""
        model = namespace["model"]
        parameter = next(model.parameters())
        x = torch.randn(1, len(prompt), DIM, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            out: torch.Tensor = model(x.to(parameter.device, parameter.dtype))
        return out

    def check(namespace: Namespace) -> None:
        model, runtime = namespace["model"], namespace["runtime"]
        assert namespace["image"].shape == (1, len(PROMPT), DIM)
        dtype = next(model.parameters()).dtype
        install_version(store, "v1", _adapter(model, 16, dtype))
        store.flip(MODEL, "v1")
        reload(port, "v1")
        with runtime.request() as version:
            assert version == "v1"
            pipeline(PROMPT)

    namespace: Namespace = {"build_model": build_model, "pipeline": pipeline, "prompt": PROMPT}
    return namespace, check


# --- runtime.md's PEFT model ----------------------------------------------------------------


def peft_model(work: Path, port: int) -> tuple[Namespace, Callable[[Namespace], None]]:
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    del port

    def check(namespace: Namespace) -> None:
        runtime = namespace["runtime"]
        assert len(runtime.slots.slots) == 4  # to_q and to_v of both blocks
        trained = get_peft_model(
            build_model(), LoraConfig(r=8, lora_alpha=16, target_modules=["to_q", "to_v"])
        )
        with torch.no_grad():
            for name, parameter in trained.named_parameters():
                if ".lora_" in name:
                    parameter.normal_(std=0.1)
        trained.save_pretrained(work / "trained")
        files = {p.name: p.read_bytes() for p in (work / "trained").iterdir() if p.is_file()}
        directory = write_version(work / "versions" / "v1", "v1", files)
        assert runtime.swap("v1", str(directory)).version == "v1"
        with runtime.request() as version, torch.no_grad():
            assert version == "v1"
            namespace["model"](torch.randn(1, 3, DIM).to(next(namespace["model"].parameters())))

    return {"base": build_model()}, check


SCENARIOS: dict[str, Callable[[Path, int], tuple[Namespace, Callable[[Namespace], None]]]] = {
    "readme-inference-pod": inference_pod,
    "runtime-torch-module": torch_module,
    "runtime-peft": peft_model,
    "runtime-diffusers": diffusers_pipeline,
}


def main(argv: list[str]) -> int:
    name, snippet, work, port = argv
    namespace, check = SCENARIOS[name](Path(work), int(port))
    namespace["__name__"] = "__main__"
    code = compile(Path(snippet).read_text(), f"<{name}>", "exec")
    exec(code, namespace)  # noqa: S102 - the docs' own snippet, the point of the test
    check(namespace)
    print("SNIPPET OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
