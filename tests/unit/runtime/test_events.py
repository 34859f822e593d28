"""The runtime's L1 events are typed, like the agent's: a swap that loads, a refusal and a
torn copy are each one event of a kind shared with the agent, logged as one line that
starts with the kind (what an operator greps a pod's log for)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from modelcache.api import EventKind
from modelcache.runtime import LoraRuntime, RuntimeConfig, SwapRefused
from modelcache.runtime.events import Loaded, Refused, Torn
from modelcache.store import Store
from tests.unit.runtime.support import MODEL, TinyNet, install_version, make_adapter


def test_the_runtimes_events_are_kinds_the_agent_shares() -> None:
    assert (Loaded.kind, Refused.kind, Torn.kind) == (
        EventKind.L1_LOAD,
        EventKind.L1_REFUSED,
        EventKind.L1_TORN,
    )
    torn = Torn(model="studio/lora", version="v2", error="copy failed at layer 3")
    assert torn.fields() == {"model": "studio/lora", "version": "v2", "error": torn.error}


def test_a_swap_and_a_refusal_log_one_typed_line_each(
    model: TinyNet, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = install_version(store, "v1", make_adapter(1).files(tmp=tmp_path))
    bad = install_version(store, "v2", make_adapter(2, rank=16).files(tmp=tmp_path))
    runtime = LoraRuntime(model, RuntimeConfig(model=str(MODEL), root=store.root))
    with caplog.at_level(logging.INFO, logger="modelcache.runtime.runtime"):
        runtime.swap("v1", good)
        with pytest.raises(SwapRefused):
            runtime.swap("v2", bad)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == [logging.INFO, logging.WARNING]
    loaded, refused = (message for _, message in lines)
    assert loaded.startswith(f"L1_LOAD: {MODEL} v1 loaded to cpu (")
    assert " MB) in " in loaded
    assert ", swap " in loaded
    assert refused.startswith(f"L1_REFUSED: {MODEL} v2: ")
    assert refused.endswith("(live stays v1)")
