"""A bad version is refused with a reason naming what is wrong; the live one keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from modelcache.api.manifest import MANIFEST_NAME
from modelcache.runtime import LoraRuntime, RuntimeConfig, SwapRefused
from modelcache.store import Store
from tests.unit.runtime.support import (
    ADAPTER,
    CONFIG,
    MODEL,
    Adapter,
    TinyNet,
    build,
    expected_model,
    inputs,
    install_version,
    make_adapter,
    run,
    write_version,
)

LAYER = "blocks.0.to_q"
KEY_A = f"base_model.model.{LAYER}.lora_A.weight"
KEY_B = f"base_model.model.{LAYER}.lora_B.weight"


def retyped(adapter: Adapter, key: str, tensor: torch.Tensor) -> Adapter:
    return Adapter({**adapter.tensors, key: tensor}, adapter.config, adapter.rank, adapter.alpha)


def without(adapter: Adapter, key: str) -> Adapter:
    tensors = {k: v for k, v in adapter.tensors.items() if k != key}
    return Adapter(tensors, adapter.config, adapter.rank, adapter.alpha)


def configured(adapter: Adapter, **changes: object) -> Adapter:
    return Adapter(adapter.tensors, {**adapter.config, **changes}, adapter.rank, adapter.alpha)


GOOD = make_adapter(9, rank=4)
BAD: dict[str, tuple[Adapter, str, str]] = {
    "shape": (
        retyped(GOOD, KEY_A, torch.zeros(4, 15)),
        "shape",
        rf"lora_A of layer {LAYER} has shape \[4, 15\], expected \[4, 16\]",
    ),
    "dtype": (
        retyped(GOOD, KEY_B, GOOD.tensors[KEY_B].half()),
        "dtype",
        rf"lora_B of layer {LAYER} is F16; the slot holds F32",
    ),
    "rank above the slot": (
        make_adapter(9, rank=16),
        "rank",
        r"lora rank 16 exceeds slot rank 8 for layer blocks.0.to_q",
    ),
    "rank unlike the settings": (
        configured(GOOD, r=2),
        "rank",
        rf"lora_A of layer {LAYER} has rank 4 but the adapter settings say 2",
    ),
    "missing key": (without(GOOD, KEY_B), "key", rf"missing key '{LAYER}.lora_B.weight'"),
    "unexpected key": (
        retyped(GOOD, "base_model.model.blocks.0.down.lora_A.weight", torch.zeros(4, 24)),
        "key",
        r"layer 'blocks.0.down', which has no LoRA slot",
    ),
    "untargeted layer": (
        configured(GOOD, target_modules=["to_q", "up"]),
        "settings",
        r"layer 'blocks.0.to_v', which target_modules \['to_q', 'up'\] does not select",
    ),
    "dora": (configured(GOOD, use_dora=True), "settings", r"use_dora=True is not supported"),
}


@pytest.fixture
def serving(store: Store, tmp_path: Path) -> tuple[TinyNet, LoraRuntime, torch.Tensor]:
    """A model live at v1, and its output."""
    model = build()
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL), root=store.root))
    adapter = make_adapter(1)
    runtime.swap("v1", install_version(store, "v1", adapter.files(tmp=tmp_path)))
    out = run(model, inputs())
    assert torch.equal(out, run(expected_model(adapter), inputs()))
    return model, runtime, out


def assert_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor],
    swap: Callable[[LoraRuntime], object],
    kind: str,
    reason: str,
) -> None:
    model, runtime, out = serving
    pointers = runtime.slots.storage_pointers()
    with pytest.raises(SwapRefused, match=reason) as refused:
        swap(runtime)
    assert refused.value.kind == kind
    assert runtime.live_version == "v1"
    assert torch.equal(run(model, inputs()), out)
    assert runtime.slots.storage_pointers() == pointers
    failures = runtime.metrics.registry.get_sample_value(
        "modelcache_runtime_swap_failures_total", {"model": str(MODEL), "reason": kind}
    )
    assert failures == 1


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_adapter_is_refused(
    case: str,
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor],
    store: Store,
    tmp_path: Path,
) -> None:
    adapter, kind, reason = BAD[case]
    path = install_version(store, "v2", adapter.files(tmp=tmp_path))
    assert_refused(serving, lambda rt: rt.swap("v2", path), kind, reason)


def test_a_failing_checksum_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    """The manifest's sha256 is for other bytes: the same size, one byte flipped at the end."""
    path = write_version(store.root / "v2", "v2", GOOD.files(tmp=tmp_path))
    data = bytearray((path / ADAPTER).read_bytes())
    data[-1] ^= 0xFF
    (path / ADAPTER).write_bytes(bytes(data))
    reason = rf"{ADAPTER}: sha256 [0-9a-f]{{64}} does not match the manifest's"
    assert_refused(serving, lambda rt: rt.swap("v2", path), "checksum", reason)


def test_a_tampered_adapter_config_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    path = write_version(store.root / "v2", "v2", GOOD.files(tmp=tmp_path))
    (path / CONFIG).write_text(json.dumps({**GOOD.config, "lora_alpha": 99}))
    assert_refused(serving, lambda rt: rt.swap("v2", path), "checksum", rf"{CONFIG}: sha256")


def test_a_file_of_the_wrong_size_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    path = write_version(store.root / "v2", "v2", GOOD.files(tmp=tmp_path))
    with (path / ADAPTER).open("ab") as handle:
        handle.write(b"\0")
    assert_refused(serving, lambda rt: rt.swap("v2", path), "file", r"the manifest says")


def test_another_version_in_the_directory_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    path = install_version(store, "v2", GOOD.files(tmp=tmp_path))
    assert_refused(
        serving, lambda rt: rt.swap("v3", path), "manifest", r"holds version 'v2', not 'v3'"
    )


def test_a_missing_directory_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store
) -> None:
    missing = store.root / "models" / "nope"
    assert_refused(serving, lambda rt: rt.swap("v2", missing), "path", r"does not exist")


def test_a_path_outside_the_root_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], tmp_path: Path
) -> None:
    outside = write_version(tmp_path / "elsewhere", "v2", GOOD.files(tmp=tmp_path))
    assert_refused(serving, lambda rt: rt.swap("v2", outside), "path", r"outside")


def test_no_manifest_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    path = write_version(store.root / "v2", "v2", GOOD.files(tmp=tmp_path))
    (path / MANIFEST_NAME).unlink()
    assert_refused(serving, lambda rt: rt.swap("v2", path), "manifest", r"cannot read")


def test_no_settings_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    files = GOOD.files(tmp=tmp_path)
    del files[CONFIG]
    path = install_version(store, "v2", files)
    assert_refused(serving, lambda rt: rt.swap("v2", path), "settings", r"no adapter_config.json")


def test_a_truncated_header_is_refused(
    serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    files = {**GOOD.files(tmp=tmp_path), ADAPTER: b"\xff" * 8 + b"{}"}
    path = install_version(store, "v2", files)
    assert_refused(serving, lambda rt: rt.swap("v2", path), "format", r"does not fit the file")


HOSTILE_CONFIGS = {
    "nested past the parser's recursion": b"[" * 100_000 + b"]" * 100_000,
    "a number too long to convert": b'{"r": ' + b"9" * 10_000 + b"}",
    "not UTF-8": b'{"r": 4, "lora_alpha": "\xff\xfe"}',
    "not an object": b"[4, 16]",
}


@pytest.mark.parametrize("case", list(HOSTILE_CONFIGS))
def test_a_hostile_adapter_config_is_refused(
    case: str, serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    """A published version is untrusted bytes with valid checksums: its adapter_config.json
    is refused like any bad version, never a crash out of the swap."""
    files = {**GOOD.files(tmp=tmp_path), CONFIG: HOSTILE_CONFIGS[case]}
    path = install_version(store, "v2", files)
    assert_refused(serving, lambda rt: rt.swap("v2", path), "format", rf"{CONFIG} is not")


@pytest.mark.parametrize(
    "pattern", ["[" * 100_000 + "]" * 100_000, '{"to_q": ' + "9" * 10_000 + "}"]
)
def test_hostile_settings_in_the_safetensors_metadata_are_refused(
    pattern: str, serving: tuple[TinyNet, LoraRuntime, torch.Tensor], store: Store, tmp_path: Path
) -> None:
    adapter = Adapter(GOOD.tensors, {}, GOOD.rank, GOOD.alpha)
    metadata = {"r": "4", "lora_alpha": "16", "rank_pattern": pattern}
    path = install_version(store, "v2", adapter.files(metadata=metadata, tmp=tmp_path))
    assert_refused(serving, lambda rt: rt.swap("v2", path), "settings", "rank_pattern is not JSON")
