"""Make LoRA adapter versions for the studio model: `python -m examples.studio.adapters OUT`.

Writes what PEFT's `save_pretrained` writes, so `modelcache publish OUT <url> --version v1`
can publish it and the runtime can swap it in:
    OUT/adapter_config.json          {"peft_type": "LORA", "r", "lora_alpha", "target_modules"}
    OUT/adapter_model.safetensors    base_model.model.<layer>.lora_{A,B}.weight
The weights are random from `--seed`: two seeds, two visibly different "styles".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from examples.studio.model import (
    ADAPTER_FILE,
    CONFIG_FILE,
    PEFT_PREFIX,
    StudioConfig,
    build_model,
    lora_layers,
)
from modelcache.runtime import write_safetensors

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def make_adapter(
    config: StudioConfig,
    *,
    seed: int,
    rank: int,
    alpha: float | None = None,
    strength: float = 1.0,
    targets: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """The tensors and adapter_config of a random rank-`rank` LoRA for `config`'s model.

    `rank` may exceed `config.max_rank` on purpose: such a version is refused by the
    runtime (a bad version to try a rollback with)."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    targets = tuple(targets or config.targets)
    alpha = float(rank if alpha is None else alpha)
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(build_model(config)).items():
        if name.rsplit(".", 1)[-1] not in targets:
            continue
        # scaling * B @ A has entries of about strength / sqrt(in): a clear change of style.
        a = torch.randn(rank, layer.in_features, generator=generator) / math.sqrt(layer.in_features)
        b = torch.randn(layer.out_features, rank, generator=generator) * (
            strength * rank / (alpha * math.sqrt(rank))
        )
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a.to(dtype)
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b.to(dtype)
    if not tensors:
        raise ValueError(f"targets {list(targets)} select no layer of the studio model")
    settings: dict[str, object] = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": list(targets),
        "bias": "none",
        "use_dora": False,
        "fan_in_fan_out": False,
    }
    return tensors, settings


def write_adapter(
    directory: Path, tensors: dict[str, torch.Tensor], settings: dict[str, object]
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / ADAPTER_FILE, tensors, {"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return directory


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.studio.adapters",
        description="Write a random PEFT LoRA for the studio model into OUT (then publish it).",
    )
    parser.add_argument("out", type=Path, help="the version directory to write")
    parser.add_argument("--seed", type=int, default=1, help="the adapter's weights (default 1)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    parser.add_argument("--alpha", type=float, default=None, help="lora_alpha (default: rank)")
    parser.add_argument("--strength", type=float, default=1.0, help="how far it moves the model")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--config", type=Path, help="the studio config JSON the server uses")
    parser.add_argument("--targets", nargs="+", help="layers to adapt (default: the config's)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = StudioConfig.from_file(args.config) if args.config else StudioConfig()
        tensors, settings = make_adapter(
            config,
            seed=args.seed,
            rank=args.rank,
            alpha=args.alpha,
            strength=args.strength,
            targets=args.targets,
            dtype=DTYPES[args.dtype],
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty (a version is immutable)", file=sys.stderr)
        return 2
    write_adapter(args.out, tensors, settings)
    size = (args.out / ADAPTER_FILE).stat().st_size
    note = ""
    if args.rank > config.max_rank:
        note = f" (above the slot rank {config.max_rank}: the runtime will refuse it)"
    print(
        f"wrote {args.out}: rank {args.rank}, alpha {settings['lora_alpha']}, "
        f"{len(tensors) // 2} layers, {size} bytes{note}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
