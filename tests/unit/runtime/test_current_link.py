"""A pod reads the node's `current` link exactly as the agent's store does: one reader of the
link (`modelcache.store.pointers`), so a link the store would not call a version is never
loaded by a pod either (it used to normalise `versions//v1` or `./versions/v1`, which the
store reports as no version at all)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modelcache.runtime import SwapRefused
from modelcache.runtime.source import current_directory
from modelcache.store import Layout, pointers
from tests.unit.runtime.support import MODEL

HELD = ("v1", "v2.0")
SEGMENTS = st.sampled_from(["versions", *HELD, "", ".", "..", "models", "v1\n", "x" * 130])
TARGETS = st.builds(
    lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
    st.booleans(),
    st.lists(SEGMENTS, min_size=1, max_size=4),
).filter(bool)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    layout = Layout(root)
    for version in HELD:
        layout.version_dir(MODEL, version).mkdir(parents=True)
    return root


@settings(max_examples=300, deadline=None)
@given(target=TARGETS)
@example(target="versions/v1")
@example(target="versions//v1")
@example(target="./versions/v1")
@example(target="versions/v1/")
@example(target="versions/../versions/v1")
def test_the_pod_loads_what_the_store_calls_current(root: Path, target: str) -> None:
    """Loaded: the version the store reads from the link, when it is held; else refused."""
    link = Layout(root).current_link(MODEL)
    link.unlink(missing_ok=True)
    os.symlink(target, link)
    named = pointers.read(link)
    expected = named if named in HELD else None
    loaded: str | None = None
    refusal: SwapRefused | None = None
    try:
        loaded, directory = current_directory(root, str(MODEL))
        assert directory == Layout(root).version_dir(MODEL, loaded)
    except SwapRefused as refused:
        refusal = refused
    assert loaded == expected, f"{target!r}: the store reads {named!r}, the pod {loaded!r}"
    assert refusal is None or refusal.kind == "current"


def test_no_link_is_no_version_live_yet(tmp_path: Path) -> None:
    with pytest.raises(SwapRefused, match="no version is live yet"):
        current_directory(tmp_path, str(MODEL))
