"""A copy that fails partway leaves weights from two versions: the runtime must say so and
refuse requests (never serve the blend as if it were a version) until a swap succeeds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from modelcache.runtime import LoraRuntime, ReloadService, RuntimeConfig, TornWeightsError
from modelcache.store import Store
from tests.unit.runtime.support import (
    MODEL,
    TinyNet,
    expected_model,
    inputs,
    install_version,
    make_adapter,
    run,
)


def failing_halfway(runtime: LoraRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next copy write half of the first flat buffer, then fail (as a device error)."""
    real_load = runtime.slots.load

    def load(flats: Mapping[torch.dtype, torch.Tensor], scales: torch.Tensor) -> None:
        for dtype, live in runtime.slots.flats.items():
            half = live.numel() // 2
            live[:half].copy_(flats[dtype][:half])
        monkeypatch.setattr(runtime.slots, "load", real_load)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(runtime.slots, "load", load)


def test_a_copy_failing_partway_refuses_requests_until_a_swap_succeeds(
    model: TinyNet,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = inputs()
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL), root=store.root))
    adapters = {"v1": make_adapter(1), "v2": make_adapter(2)}
    paths = {v: install_version(store, v, a.files(tmp=tmp_path)) for v, a in adapters.items()}
    runtime.swap("v1", paths["v1"])
    service = ReloadService([runtime])

    failing_halfway(runtime, monkeypatch)
    store.flip(MODEL, "v2")  # the agent flips, then calls
    call = json.dumps({"model": str(MODEL), "version": "v2"}).encode()
    status, answer = service.handle(call)

    assert status == 500, answer
    assert answer["kind"] == "torn"
    assert answer["live_version"] is None
    assert "v1 and v2" in answer["reason"]
    assert "illegal memory access" in answer["reason"]
    # The weights really are a blend: neither version's output.
    out = run(model, x)
    assert not torch.equal(out, run(expected_model(adapters["v1"]), x))
    assert not torch.equal(out, run(expected_model(adapters["v2"]), x))
    assert runtime.live_version is None
    with pytest.raises(TornWeightsError, match="until a swap succeeds"), runtime.request():
        pass
    assert service.status()["models"][str(MODEL)]["torn"] == answer["reason"]
    metrics = service.metrics().decode()
    assert f'modelcache_runtime_swap_failures_total{{model="{MODEL}",reason="torn"}} 1.0' in metrics
    assert "modelcache_runtime_live_version{" not in metrics

    # The agent's next reload (here: back to v1) repairs it.
    result = runtime.swap("v1", paths["v1"])
    assert not result.unchanged, "a torn runtime must copy again, even to the version it had"
    with runtime.request() as version:
        assert version == "v1"
        assert torch.equal(run(model, x), run(expected_model(adapters["v1"]), x))
    assert service.status()["models"][str(MODEL)]["torn"] is None
