"""A PEFT LoRA model (`get_peft_model`) served by the runtime: swaps compute what PEFT's own
loading computes, in the same storage, and bad versions change nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

from modelcache.runtime import LoraRuntime, RuntimeConfig, SwapRefused  # noqa: E402
from modelcache.store import Store  # noqa: E402
from tests.unit.runtime.support import (  # noqa: E402
    ADAPTER,
    MAX_RANK,
    MODEL,
    TARGETS,
    Adapter,
    TinyNet,
    inputs,
    install_version,
    make_adapter,
    run,
    write_version,
)

LAYER = "blocks.0.to_q"
KEY_A = f"base_model.model.{LAYER}.lora_A.weight"
KEY_B = f"base_model.model.{LAYER}.lora_B.weight"


def peft_model(**options: Any) -> Any:
    """The base TinyNet (plain nn.Linear) with PEFT LoRA at the slot rank on TARGETS."""
    config = LoraConfig(r=MAX_RANK, lora_alpha=16, target_modules=list(TARGETS), **options)
    return get_peft_model(TinyNet(), config).eval()


def peft_reference(adapter: Adapter, tmp: Path, *, scale: float | None = None) -> Any:
    """PEFT's own way: a fresh base, `PeftModel.from_pretrained` on the saved adapter."""
    directory = tmp / f"reference-{id(adapter)}"
    directory.mkdir(exist_ok=True)
    for name, data in adapter.files(tmp=tmp).items():
        (directory / name).write_bytes(data)
    model = PeftModel.from_pretrained(TinyNet(), directory).eval()
    if scale is not None:
        for module in model.modules():
            if isinstance(module, peft.tuners.lora.LoraLayer):
                module.set_scale("default", scale)
    return model


def pointers(model: nn.Module) -> dict[str, int]:
    return {name: p.data_ptr() for name, p in [*model.named_parameters(), *model.named_buffers()]}


def peft_layer(model: nn.Module, name: str = LAYER) -> Any:
    return model.get_submodule(f"base_model.model.{name}")


def test_slots_are_named_as_peft_saves_them() -> None:
    runtime = LoraRuntime(peft_model(), RuntimeConfig(model=str(MODEL)))
    assert sorted(runtime.slots.slots) == sorted(
        f"blocks.{i}.{t}" for i in range(2) for t in TARGETS
    )
    assert {s.max_rank for s in runtime.slots.slots.values()} == {MAX_RANK}


def test_swaps_match_peft_from_pretrained_and_keep_storage(store: Store, tmp_path: Path) -> None:
    model = peft_model()
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL)))
    x = inputs()
    base = run(TinyNet(), x)
    assert torch.equal(run(model, x), base)  # PEFT initialises B to zero
    before = pointers(model)
    adapters = {
        "v1": make_adapter(1),  # the full slot rank
        "v2": make_adapter(2, rank=4, alpha=8.0),  # smaller: zero-padded
        "v3": make_adapter(3, rank=2, targets=("to_v",)),  # fewer layers: others cleared
    }
    paths = {v: install_version(store, v, a.files(tmp=tmp_path)) for v, a in adapters.items()}
    for version in ["v1", "v2", "v3", "v1", "v2", "v1"]:
        runtime.swap(version, paths[version])
        out = run(model, x)
        torch.testing.assert_close(out, run(peft_reference(adapters[version], tmp_path), x))
        assert not torch.allclose(out, base, atol=1e-3), "the swap changed nothing"
        assert pointers(model) == before, version
    layer = peft_layer(model)
    assert (
        layer.lora_A["default"].weight.data_ptr()
        == before[f"base_model.model.{LAYER}.lora_A.default.weight"]
    )
    assert layer.scaling["default"] == 16.0 / MAX_RANK


def test_a_smaller_rank_is_zero_padded_and_peft_bookkeeping_follows(
    store: Store, tmp_path: Path
) -> None:
    model = peft_model()
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL)))
    runtime.swap(
        "v2", install_version(store, "v2", make_adapter(2, rank=3, alpha=6.0).files(tmp=tmp_path))
    )
    layer = peft_layer(model)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert a.shape == (MAX_RANK, 16)
    assert not a[3:].any()
    assert not b[:, 3:].any()
    assert a[:3].any()
    assert (layer.r["default"], layer.lora_alpha["default"]) == (3, 6.0)
    assert layer.scaling["default"] == pytest.approx(2.0)


def test_the_scale_changes_inside_the_exclusive_section(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request never sees the new weights with the old scale: both change while no
    request can be inside (within the callback the controller runs with the gate shut)."""
    model = peft_model()
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL)))
    layer = peft_layer(model)
    seen: dict[str, float] = {}
    exclusive = runtime.controller.exclusive

    def spy(version: str, apply: Callable[[], None]) -> float:
        def observed() -> None:
            seen["before"] = layer.scaling["default"]
            apply()
            seen["after"] = layer.scaling["default"]

        return exclusive(version, observed)

    monkeypatch.setattr(runtime.controller, "exclusive", spy)
    runtime.swap(
        "v1", install_version(store, "v1", make_adapter(1, rank=4, alpha=2.0).files(tmp=tmp_path))
    )
    assert seen == {"before": 16.0 / MAX_RANK, "after": 0.5}
    assert layer.scaling["default"] == 0.5


def test_an_adapter_weight_set_by_the_user_is_kept(store: Store, tmp_path: Path) -> None:
    model = peft_model()
    for module in model.modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            module.set_scale("default", 0.5)
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL)))
    adapter = make_adapter(4, rank=4, alpha=8.0)
    runtime.swap("v4", install_version(store, "v4", adapter.files(tmp=tmp_path)))
    x = inputs()
    torch.testing.assert_close(run(model, x), run(peft_reference(adapter, tmp_path, scale=0.5), x))


GOOD = make_adapter(9, rank=4)


def _with(key: str, tensor: torch.Tensor | None) -> Adapter:
    tensors = {k: v for k, v in GOOD.tensors.items() if k != key}
    if tensor is not None:
        tensors[key] = tensor
    return Adapter(tensors, GOOD.config, GOOD.rank, GOOD.alpha)


BAD: dict[str, tuple[Adapter, str, str]] = {
    "shape": (
        _with(KEY_A, torch.zeros(4, 15)),
        "shape",
        rf"lora_A of layer {LAYER} has shape \[4, 15\], expected \[4, 16\]",
    ),
    "dtype": (
        _with(KEY_B, GOOD.tensors[KEY_B].half()),
        "dtype",
        rf"lora_B of layer {LAYER} is F16; the slot holds F32",
    ),
    "rank above the slot": (
        make_adapter(9, rank=MAX_RANK * 2),
        "rank",
        rf"lora rank {MAX_RANK * 2} exceeds slot rank {MAX_RANK} for layer {LAYER}",
    ),
    "missing key": (_with(KEY_B, None), "key", rf"missing key '{LAYER}.lora_B.weight'"),
}


@pytest.fixture
def serving(store: Store, tmp_path: Path) -> tuple[Any, LoraRuntime, torch.Tensor]:
    model = peft_model()
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL), root=store.root))
    adapter = make_adapter(1)
    runtime.swap("v1", install_version(store, "v1", adapter.files(tmp=tmp_path)))
    out = run(model, inputs())
    torch.testing.assert_close(out, run(peft_reference(adapter, tmp_path), inputs()))
    return model, runtime, out


def assert_refused(
    serving: tuple[Any, LoraRuntime, torch.Tensor], path: Path, kind: str, reason: str
) -> None:
    model, runtime, out = serving
    before = pointers(model)
    scaling = peft_layer(model).scaling["default"]
    with pytest.raises(SwapRefused, match=reason) as refused:
        runtime.swap("v2", path)
    assert refused.value.kind == kind
    assert runtime.live_version == "v1"
    assert torch.equal(run(model, inputs()), out)
    assert pointers(model) == before
    assert peft_layer(model).scaling["default"] == scaling


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_version_is_refused_and_changes_nothing(
    case: str, serving: tuple[Any, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    adapter, kind, reason = BAD[case]
    assert_refused(serving, install_version(store, "v2", adapter.files(tmp=tmp_path)), kind, reason)


def test_a_failing_checksum_is_refused(
    serving: tuple[Any, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    path = write_version(store.root / "v2", "v2", GOOD.files(tmp=tmp_path))
    data = bytearray((path / ADAPTER).read_bytes())
    data[-1] ^= 0xFF
    (path / ADAPTER).write_bytes(bytes(data))
    assert_refused(serving, path, "checksum", r"sha256 [0-9a-f]{64} does not match the manifest")


class WithEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 16)
        self.proj = nn.Linear(16, 16)


def two_adapters() -> nn.Module:
    model = peft_model()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["to_q"]))
    return model


UNSUPPORTED: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "two adapters": (two_adapters, r"holds 2 adapters \['default', 'other'\]"),
    "dora": (lambda: peft_model(use_dora=True), r"use_dora=True \(DoRA\)"),
    "lora bias": (lambda: peft_model(lora_bias=True), r"lora_bias=True"),
    "embedding": (
        lambda: get_peft_model(WithEmbedding(), LoraConfig(r=4, target_modules=["embed", "proj"])),
        r"LoRA layer base_model.model.embed is a peft.tuners.lora.layer.Embedding",
    ),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_peft_models_are_refused_at_construction(case: str) -> None:
    build, reason = UNSUPPORTED[case]
    with pytest.raises(ValueError, match=reason):
        LoraRuntime(build(), RuntimeConfig(model=str(MODEL)))


def test_the_runtime_imports_and_serves_without_peft_or_diffusers() -> None:
    code = (
        "import sys\n"
        "for name in ('peft', 'diffusers', 'transformers'):\n"
        "    sys.modules[name] = None  # any import of them now fails\n"
        "from modelcache.runtime import LoraRuntime, RuntimeConfig\n"
        "from tests.unit.runtime.support import build\n"
        "runtime = LoraRuntime(build(), RuntimeConfig(model='a/b'))\n"
        "print(len(runtime.slots.slots))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],  # the repo root, for `tests.unit...`
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"
