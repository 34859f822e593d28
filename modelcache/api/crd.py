"""CustomResourceDefinitions generated from the pydantic models: one source of truth.

Kubernetes wants a *structural* schema: no `$ref`, no `anyOf` for nullability,
int-or-string marked with `x-kubernetes-int-or-string`, no `additionalProperties:
false` (the server prunes unknown fields instead). `crds/*.yaml` is this module's
output; a test fails when it is stale (`python -m modelcache.api.crd` rewrites it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from modelcache.api.k8s import (
    GROUP,
    MODEL_VERSION_KIND,
    MODEL_VERSIONS,
    NODE_CACHE_KIND,
    NODE_CACHES,
    VERSION,
)
from modelcache.api.modelversion import ModelVersionSpec, ModelVersionStatus
from modelcache.api.nodecache import NodeCacheSpec, NodeCacheStatus

_DROP = {"title", "$defs"}


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    scope: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict[str, Any], ...]
    description: str


MODEL_VERSION = Resource(
    kind=MODEL_VERSION_KIND,
    plural=MODEL_VERSIONS,
    singular=MODEL_VERSION_KIND.lower(),
    short_names=("mv",),
    scope="Namespaced",
    spec=ModelVersionSpec,
    status=ModelVersionStatus,
    columns=(
        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
    description="A model's files cached on GPU nodes at one live version, rolled out in waves.",
)

NODE_CACHE = Resource(
    kind=NODE_CACHE_KIND,
    plural=NODE_CACHES,
    singular=NODE_CACHE_KIND.lower(),
    short_names=("nc",),
    scope="Cluster",
    spec=NodeCacheSpec,
    status=NodeCacheStatus,
    columns=(
        {"name": "Models", "type": "string", "jsonPath": ".spec.models[*].name"},
        {"name": "Free", "type": "integer", "jsonPath": ".status.disk.freeBytes"},
        {"name": "Updated", "type": "date", "jsonPath": ".status.updatedAt"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
    description="What one node must hold (spec, by the operator) and holds (status, by its agent).",
)

RESOURCES = (MODEL_VERSION, NODE_CACHE)


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema (wire names), in the form the API server accepts."""
    raw = model.model_json_schema(by_alias=True)
    definitions = raw.get("$defs", {})
    converted: dict[str, Any] = _convert(raw, definitions)
    return converted


def _convert(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, definitions)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "additionalProperties" and value is False):
            continue
        if key == "default" and (value is None or isinstance(value, (dict, list))):
            continue  # object defaults come from the operator's models, not the server
        out[key] = _convert(value, definitions)
    if "anyOf" in out:
        out = _collapse_any_of(out)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    return out


def _collapse_any_of(node: dict[str, Any]) -> dict[str, Any]:
    """`X | None` -> X nullable; `int | str` -> int-or-string."""
    options = node.pop("anyOf")
    non_null = [o for o in options if o.get("type") != "null"]
    if node.get("x-kubernetes-int-or-string"):
        return node
    if len(non_null) == 1:
        merged = {**non_null[0], **node}
        if len(options) > 1:
            merged["nullable"] = True
        return merged
    raise ValueError(f"cannot express anyOf {options} in a structural schema")


def crd(resource: Resource) -> dict[str, Any]:
    spec_schema = structural_schema(resource.spec)
    status_schema = structural_schema(resource.status)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": resource.scope,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": ["modelcache"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(resource.columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": resource.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render(resource: Resource) -> str:
    header = "# Generated from modelcache.api by `python -m modelcache.api.crd`: do not edit.\n"
    return header + yaml.safe_dump(crd(resource), sort_keys=False, width=100)


def write_all(directory: Path, chart_crds: Path | None = None) -> list[Path]:
    """Write the generated CRDs into `directory`; mirror every CRD file into the Helm chart."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for resource in RESOURCES:
        path = directory / f"{resource.plural}.{GROUP}.yaml"
        path.write_text(render(resource))
        written.append(path)
    if chart_crds is not None:
        chart_crds.mkdir(parents=True, exist_ok=True)
        for source in sorted(directory.glob("*.yaml")):
            copy = chart_crds / source.name
            copy.write_text(source.read_text())
            written.append(copy)
    return written


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path()
    for path in write_all(root / "crds", root / "helm" / "modelcache" / "crds"):
        print(path)
