"""Requests running during swaps each see one version, start to end."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from modelcache.runtime import LoraRuntime, SwapController, SwapRefused
from modelcache.store import Store
from tests.unit.runtime.support import (
    TinyNet,
    expected_model,
    inputs,
    install_version,
    make_adapter,
    run,
)

SWAPS = 100


def test_requests_during_100_swaps_each_see_one_version(
    model: TinyNet, runtime: LoraRuntime, store: Store, tmp_path: Path
) -> None:
    x = inputs()
    adapters = {"v1": make_adapter(1), "v2": make_adapter(2, rank=4), "v3": make_adapter(3, rank=2)}
    paths = {v: install_version(store, v, a.files(tmp=tmp_path)) for v, a in adapters.items()}
    expected: dict[str | None, torch.Tensor] = {
        v: run(expected_model(a), x) for v, a in adapters.items()
    }
    expected[None] = run(TinyNet(), x)
    assert all(not torch.equal(expected["v1"], out) for v, out in expected.items() if v != "v1")

    seen: list[tuple[str | None, torch.Tensor]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def serve() -> None:
        try:
            while not stop.is_set():
                with runtime.request() as version:
                    first = run(model, x)
                    second = run(model, x)  # a "multi-step" request: both steps, one version
                assert torch.equal(first, second)
                seen.append((version, first))
        except BaseException as error:  # surfaced below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=serve) for _ in range(3)]
    for thread in threads:
        thread.start()
    order = ["v1", "v2", "v3"]
    for i in range(SWAPS):
        version = order[i % 3]
        assert runtime.swap(version, paths[version]).version == version
    stop.set()
    for thread in threads:
        thread.join()

    assert not errors, errors
    versions = {saw for saw, _ in seen}
    assert len(seen) > SWAPS  # requests really ran alongside the swaps
    assert len(versions - {None}) >= 2
    for saw, out in seen:
        assert torch.equal(out, expected[saw]), f"a request saw mixed weights ({saw})"
    assert runtime.controller.in_flight == 0


def test_a_swap_waits_for_requests_in_flight_and_holds_new_ones() -> None:
    controller = SwapController(live_version="v1")
    entered = threading.Event()
    release = threading.Event()
    log: list[str] = []

    def long_request() -> None:
        with controller.request() as version:
            log.append(f"start {version}")
            entered.set()
            release.wait()
            log.append(f"end {version}")

    def late_request() -> None:
        with controller.request() as version:
            log.append(f"late {version}")

    first = threading.Thread(target=long_request)
    first.start()
    entered.wait()
    swapper = threading.Thread(
        target=lambda: controller.exclusive("v2", lambda: log.append("copy"))
    )
    swapper.start()
    while not controller._barrier:  # the swap is waiting for the drain
        pass
    late = threading.Thread(target=late_request)
    late.start()
    release.set()
    for thread in (first, swapper, late):
        thread.join()
    assert log == ["start v1", "end v1", "copy", "late v2"]


def test_a_swap_that_cannot_drain_is_refused_and_lets_requests_go_on() -> None:
    controller = SwapController(drain_timeout_s=0.05, live_version="v1")
    inside, release = threading.Event(), threading.Event()

    def stuck_request() -> None:
        with controller.request():
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=stuck_request)
    holder.start()
    try:
        assert inside.wait(10)
        with pytest.raises(SwapRefused, match="1 requests still in flight"):
            controller.exclusive("v2", lambda: None)
        with controller.request() as version:  # the barrier is down again
            assert version == "v1"
    finally:
        release.set()
        holder.join()


def test_a_swap_from_inside_a_request_on_the_same_thread_is_refused_at_once() -> None:
    controller = SwapController(drain_timeout_s=600, live_version="v1")
    applied: list[str] = []
    with controller.request(), pytest.raises(SwapRefused, match="inside a request on the same"):
        controller.exclusive("v2", lambda: applied.append("v2"))  # would wait 600 s for itself
    assert applied == []
    assert controller.live_version == "v1"
    controller.exclusive("v2", lambda: applied.append("v2"))  # outside a request: fine
    assert (applied, controller.live_version) == (["v2"], "v2")
