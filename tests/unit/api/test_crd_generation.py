"""crds/ is generated from the pydantic models; a stale file fails here."""

from __future__ import annotations

from pathlib import Path

from modelcache.api.crd import RESOURCES, crd, render
from modelcache.api.k8s import GROUP

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "helm" / "modelcache" / "crds"


def test_crds_directory_is_up_to_date() -> None:
    for resource in RESOURCES:
        path = CRDS / f"{resource.plural}.{GROUP}.yaml"
        assert path.exists(), f"{path} missing: run python -m modelcache.api.crd"
        assert path.read_text() == render(resource), (
            f"{path} is stale: run python -m modelcache.api.crd"
        )


def test_helm_chart_carries_the_same_crds() -> None:
    for path in CRDS.glob("*.yaml"):
        copy = CHART_CRDS / path.name
        assert copy.exists(), f"{copy} missing: run python -m modelcache.api.crd"
        assert copy.read_text() == path.read_text(), (
            f"{copy} is stale: run python -m modelcache.api.crd"
        )
    assert {p.name for p in CHART_CRDS.glob("*.yaml")} == {p.name for p in CRDS.glob("*.yaml")}


def walk(node: object) -> list[dict[str, object]]:
    if isinstance(node, dict):
        return [node, *(n for value in node.values() for n in walk(value))]
    if isinstance(node, list):
        return [n for value in node for n in walk(value)]
    return []


def test_schemas_are_structural() -> None:
    for resource in RESOURCES:
        for node in walk(crd(resource)["spec"]["versions"][0]["schema"]):
            assert "$ref" not in node
            assert "anyOf" not in node
            assert node.get("additionalProperties") is not False
