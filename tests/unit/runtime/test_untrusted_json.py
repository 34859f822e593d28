"""JSON from a published version parses to an object or is one SwapRefused, whatever it holds."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.runtime import SwapRefused
from modelcache.runtime.untrusted_json import json_object
from tests.strategies import json_values

DOCUMENTS = st.binary(max_size=200) | json_values(st.text(max_size=6), max_leaves=20).map(
    lambda v: json.dumps(v).encode()
)


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS)
def test_bytes_parse_to_an_object_or_are_refused(data: bytes) -> None:
    refusal: SwapRefused | None = None
    try:
        parsed = json_object(data, "format", "adapter_config.json")
    except SwapRefused as refused:
        refusal = refused
    if refusal is None:
        assert parsed == json.loads(data)
        return
    assert refusal.kind == "format"
    assert refusal.reason.startswith("adapter_config.json is not")
    assert "\n" not in refusal.reason


@pytest.mark.parametrize(
    "data",
    [b"[" * 100_000, b"{" * 50_000, b'{"r": ' + b"1" * 100_000 + b"}", b"\xff\xfe{}", b"null"],
)
def test_hostile_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(SwapRefused) as refused:
        json_object(data, "format", "adapter_config.json")
    assert len(refused.value.reason) < 300, "the message is bounded, whatever the input"
