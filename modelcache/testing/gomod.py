"""Scratch Go modules for building kube-apiserver and kubectl from the module proxy.

k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/apiserver...)
with paths inside its own repository, which a dependent module cannot use. Each
staging module is published as a v0.x.y twin of v1.x.y, so a scratch module
that requires k8s.io/kubernetes and replaces every staging module with its twin
builds the real binaries.
"""

import re

_STAGING_REPLACE = re.compile(
    r"^\s*(?:replace\s+)?(?P<module>[\w.\-/]+)(?:\s+v\S+)?\s*=>\s*\./staging/src/(?P<path>\S+)\s*$",
    re.MULTILINE,
)
_KUBE_VERSION = re.compile(r"^v1\.(?P<minor>\d+)\.(?P<patch>\d+)$")


def staging_version(kubernetes_version: str) -> str:
    """`v1.35.4` -> `v0.35.4`: the published version of the staging modules."""
    match = _KUBE_VERSION.match(kubernetes_version)
    if match is None:
        raise ValueError(f"kubernetes version {kubernetes_version!r} is not a release like v1.35.4")
    return f"v0.{match['minor']}.{match['patch']}"


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules that k8s.io/kubernetes's go.mod points at its ./staging tree, sorted."""
    modules = {m["module"] for m in _STAGING_REPLACE.finditer(kubernetes_go_mod)}
    return sorted(modules)


def release_parts(kubernetes_version: str) -> tuple[str, str]:
    """`v1.35.4` -> ("1", "35"): the major and minor that /version reports."""
    if _KUBE_VERSION.match(kubernetes_version) is None:
        raise ValueError(f"kubernetes version {kubernetes_version!r} is not a release like v1.35.4")
    major, minor = kubernetes_version[1:].split(".")[:2]
    return major, minor


def kube_scratch_go_mod(kubernetes_go_mod: str, kubernetes_version: str, go_version: str) -> str:
    """go.mod of a module that can `go build k8s.io/kubernetes/cmd/...` at a release."""
    modules = staging_modules(kubernetes_go_mod)
    if not modules:
        raise ValueError(
            "k8s.io/kubernetes go.mod has no ./staging replace lines: unexpected layout"
        )
    twin = staging_version(kubernetes_version)
    lines = [
        "module modelcache.local/kubebuild",
        "",
        f"go {go_version}",
        "",
        f"require k8s.io/kubernetes {kubernetes_version}",
        "",
        "replace (",
        *(f"\t{module} => {module} {twin}" for module in modules),
        ")",
        "",
    ]
    return "\n".join(lines)


def plain_scratch_go_mod(name: str, go_version: str) -> str:
    """go.mod of an empty module to `go get` a dependency into (etcd)."""
    return f"module modelcache.local/{name}\n\ngo {go_version}\n"


def go_directive(go_mod: str) -> str:
    """The `go` directive of a go.mod, e.g. `1.25.0`."""
    match = re.search(r"^go\s+(\S+)\s*$", go_mod, re.MULTILINE)
    if match is None:
        raise ValueError("go.mod has no go directive")
    return match.group(1)
