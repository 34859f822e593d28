"""`ModelRef`: which model a store path belongs to; checked on creation, as it becomes a path."""

from __future__ import annotations

from dataclasses import dataclass

from modelcache.api.names import check_model_name


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model as Kubernetes names it: namespace (a DNS label) and name (a DNS subdomain)."""

    namespace: str
    name: str

    def __post_init__(self) -> None:
        check_model_name(self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
