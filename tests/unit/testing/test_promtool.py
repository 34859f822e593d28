"""The Prometheus release a pinned promtool module version stands for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache.testing.promtool import PROMETHEUS_MODULE_VERSION, prometheus_release


def test_the_pin_is_a_prometheus_3_release() -> None:
    assert prometheus_release(PROMETHEUS_MODULE_VERSION).startswith("3.")
    assert prometheus_release("v0.305.1") == "3.5.1"
    assert prometheus_release("v0.316.0") == "3.16.0"


@given(
    major=st.integers(1, 9),
    minor=st.integers(0, 99),
    patch=st.integers(0, 10_000),
)
def test_every_module_version_maps_back_to_its_release(major: int, minor: int, patch: int) -> None:
    assert prometheus_release(f"v0.{major}{minor:02}.{patch}") == f"{major}.{minor}.{patch}"


@pytest.mark.parametrize(
    "version",
    [
        "3.16.0",
        "v3.16.0",
        "v0.316",
        "v0.316.0-rc.0",
        "v0.3160.0",
        "v0.16.0",
        "v0.016.0",
        "",
        "v0.316.0\n",
        "v0.316.01",
    ],
)
def test_anything_but_a_module_release_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match=r"is not like v0\.316\.0"):
        prometheus_release(version)


@given(
    st.one_of(
        st.from_regex(r"v0\.[0-9]{2,4}\.[0-9]{1,4}", fullmatch=True),
        st.text(alphabet="v0123456789.-rc\n", max_size=16),
    )
)
def test_a_version_either_maps_back_exactly_or_is_refused(version: str) -> None:
    try:
        release = prometheus_release(version)
    except ValueError:
        return
    major, minor, patch = (int(part) for part in release.split("."))
    assert version == f"v0.{major}{minor:02}.{patch}"
