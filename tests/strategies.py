"""Hypothesis strategies shared by the fuzz tests of parsers of untrusted bytes."""

from __future__ import annotations

from hypothesis import strategies as st

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)


SHORT_KEYS = st.text(max_size=8)


def json_values(
    keys: st.SearchStrategy[str] = SHORT_KEYS, max_leaves: int = 16
) -> st.SearchStrategy[object]:
    """Any JSON document: scalars, lists and objects nested a few levels."""
    return st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=max_leaves,
    )
