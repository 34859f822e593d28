"""A swap makes the model compute exactly what a freshly built model with the new LoRA does,
writing into the same storage every time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelcache.runtime import LoraLinear, LoraRuntime, RuntimeConfig
from modelcache.store import Store
from tests.unit.runtime.support import (
    MODEL,
    TinyNet,
    build,
    expected_model,
    inputs,
    install_version,
    make_adapter,
    merged_model,
    run,
    slot_names,
)


def pointers(model: TinyNet) -> dict[str, int]:
    return {name: p.data_ptr() for name, p in [*model.named_parameters(), *model.named_buffers()]}


def test_a_fresh_runtime_serves_the_base_model(model: TinyNet, runtime: LoraRuntime) -> None:
    assert runtime.live_version is None
    assert torch.equal(run(model, inputs()), run(TinyNet(), inputs()))


def test_swaps_match_a_fresh_model_and_keep_storage(
    model: TinyNet, runtime: LoraRuntime, store: Store, tmp_path: Path
) -> None:
    x = inputs()
    before = pointers(model)
    slots_before = runtime.slots.storage_pointers()
    v1 = make_adapter(1)  # full slot rank
    v2 = make_adapter(2, rank=4, alpha=8.0)  # a lower rank: the leading slice, rest zeroed
    v3 = make_adapter(3, rank=2, targets=("to_v",))  # fewer layers: the others are cleared
    adapters = {"v1": v1, "v2": v2, "v3": v3}
    paths = {v: install_version(store, v, a.files(tmp=tmp_path)) for v, a in adapters.items()}

    for version in ["v1", "v2", "v3", "v1", "v3", "v2"]:
        result = runtime.swap(version, paths[version])
        assert runtime.live_version == version
        assert result.version == version
        assert set(result.timings) >= {"read_s", "verify_s", "stage_s", "swap_s"}
        out = run(model, x)
        assert torch.equal(out, run(expected_model(adapters[version]), x)), version
        torch.testing.assert_close(out, run(merged_model(adapters[version]), x))
        assert pointers(model) == before
        assert runtime.slots.storage_pointers() == slots_before


def test_lower_rank_leaves_zeros_past_the_rank(
    model: TinyNet, runtime: LoraRuntime, store: Store, tmp_path: Path
) -> None:
    full = install_version(store, "v1", make_adapter(1).files(tmp=tmp_path))
    low = install_version(store, "v2", make_adapter(2, rank=3).files(tmp=tmp_path))
    runtime.swap("v1", full)
    runtime.swap("v2", low)
    layer = model.get_submodule(slot_names(model)[0])
    assert isinstance(layer, LoraLinear)
    assert not layer.lora_A[3:].any()
    assert not layer.lora_B[:, 3:].any()
    assert layer.lora_A[:3].any()
    assert float(layer.lora_scaling) == pytest.approx(16.0 / 3)


def test_the_same_version_again_is_acknowledged_without_a_copy(
    runtime: LoraRuntime, store: Store, tmp_path: Path
) -> None:
    path = install_version(store, "v1", make_adapter(1).files(tmp=tmp_path))
    assert not runtime.swap("v1", path).unchanged
    again = runtime.swap("v1", path)
    assert again.unchanged
    assert runtime.metrics.swaps.labels(str(MODEL))._value.get() == 1


def test_swap_through_the_current_link(
    model: TinyNet, runtime: LoraRuntime, store: Store, tmp_path: Path
) -> None:
    """The agent sends `.../current`; the runtime resolves it once and reports the real dir."""
    adapter = make_adapter(5)
    path = install_version(store, "v5", adapter.files(tmp=tmp_path))
    store.flip(MODEL, "v5")
    result = runtime.swap("v5", store.current_path(MODEL))
    assert result.path == path.resolve()
    assert torch.equal(run(model, inputs()), run(expected_model(adapter), inputs()))


def test_settings_from_safetensors_metadata(store: Store, tmp_path: Path) -> None:
    adapter = make_adapter(4, rank=4, alpha=2.0)
    files = adapter.files(
        tmp=tmp_path,
        metadata={"r": "4", "lora_alpha": "2", "target_modules": '["to_q", "to_v", "up"]'},
    )
    del files["adapter_config.json"]
    model = build()
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL)))
    runtime.swap("v4", install_version(store, "v4", files))
    assert torch.equal(run(model, inputs()), run(expected_model(adapter), inputs()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_slots(dtype: torch.dtype, store: Store, tmp_path: Path) -> None:
    adapter = make_adapter(6, rank=4, dtype=dtype)
    model = build(dtype)
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL)))
    runtime.swap("v6", install_version(store, "v6", adapter.files(tmp=tmp_path)))
    x = inputs(dtype=dtype)
    out = run(model, x)
    assert out.dtype == dtype
    assert torch.equal(out, run(expected_model(adapter, dtype), x))


def test_metrics_count_swaps_and_show_the_live_version(
    runtime: LoraRuntime, store: Store, tmp_path: Path
) -> None:
    for version, seed in (("v1", 1), ("v2", 2)):
        runtime.swap(
            version, install_version(store, version, make_adapter(seed).files(tmp=tmp_path))
        )
    registry = runtime.metrics.registry
    name = str(MODEL)
    assert registry.get_sample_value("modelcache_runtime_swaps_total", {"model": name}) == 2
    live = {"model": name, "version": "v2"}
    assert registry.get_sample_value("modelcache_runtime_live_version", live) == 1
    old = {"model": name, "version": "v1"}
    assert registry.get_sample_value("modelcache_runtime_live_version", old) is None
    count = registry.get_sample_value(
        "modelcache_runtime_swap_seconds_count", {"model": name, "phase": "swap"}
    )
    assert count == 2
