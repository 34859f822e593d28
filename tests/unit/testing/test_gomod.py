"""The scratch go.mod that builds kube-apiserver from the module proxy."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache.testing import gomod
from modelcache.testing.toolchain import kube_version_ldflags

UPSTREAM = """module k8s.io/kubernetes

go 1.25.0

require (
\tgithub.com/spf13/cobra v1.10.0
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tk8s.io/cri-api v0.0.0 => ./staging/src/k8s.io/cri-api
\tgithub.com/example/fork => github.com/example/fork v1.2.3
)

replace k8s.io/kms => ./staging/src/k8s.io/kms
"""


def test_staging_modules_found_in_block_and_single_line_forms() -> None:
    assert gomod.staging_modules(UPSTREAM) == [
        "k8s.io/api",
        "k8s.io/apiserver",
        "k8s.io/cri-api",
        "k8s.io/kms",
    ]


def test_scratch_go_mod_replaces_each_staging_module_with_its_published_twin() -> None:
    text = gomod.kube_scratch_go_mod(UPSTREAM, "v1.35.4", "1.25.0")
    assert "require k8s.io/kubernetes v1.35.4" in text
    assert re.search(r"^go 1\.25\.0$", text, re.MULTILINE)
    replaces = re.findall(r"^\t(\S+) => (\S+) (\S+)$", text, re.MULTILINE)
    assert replaces == [(m, m, "v0.35.4") for m in gomod.staging_modules(UPSTREAM)]
    assert "github.com/example/fork" not in text, "only staging replaces are carried over"
    assert "./staging" not in text


@pytest.mark.parametrize("bad", ["1.35.4", "v2.0.0", "v1.35", "v1.35.4-rc.1", ""])
def test_staging_version_rejects_what_is_not_a_release(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a release"):
        gomod.staging_version(bad)


def test_go_mod_without_staging_replaces_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no \./staging replace"):
        gomod.kube_scratch_go_mod("module x\n\ngo 1.25\n", "v1.35.4", "1.25")


module_names = st.lists(
    st.from_regex(r"k8s\.io/[a-z][a-z0-9\-]{0,20}", fullmatch=True),
    min_size=1,
    max_size=40,
    unique=True,
)


@given(modules=module_names, minor=st.integers(20, 99), patch=st.integers(0, 50))
def test_every_staging_module_gets_exactly_one_replace(
    modules: list[str], minor: int, patch: int
) -> None:
    upstream = (
        "module k8s.io/kubernetes\n\ngo 1.25.0\n\nreplace (\n"
        + "".join(f"\t{m} => ./staging/src/{m}\n" for m in modules)
        + ")\n"
    )
    text = gomod.kube_scratch_go_mod(upstream, f"v1.{minor}.{patch}", "1.25.0")
    replaced = re.findall(r"^\t(\S+) => (\S+) (\S+)$", text, re.MULTILINE)
    assert sorted(m for m, _, _ in replaced) == sorted(modules)
    assert {v for _, _, v in replaced} == {f"v0.{minor}.{patch}"}
    assert all(left == right for left, right, _ in replaced)


def test_release_parts_are_what_version_reports() -> None:
    assert gomod.release_parts("v1.35.4") == ("1", "35")
    with pytest.raises(ValueError, match="not a release"):
        gomod.release_parts("v1.35")


def test_kube_binaries_are_stamped_with_their_release() -> None:
    flags = kube_version_ldflags("v1.35.4").split()
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"{package}.gitVersion=v1.35.4" in flags
        assert f"{package}.gitMajor=1" in flags
        assert f"{package}.gitMinor=35" in flags
    assert flags[:2] == ["-s", "-w"]
