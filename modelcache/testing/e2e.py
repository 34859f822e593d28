"""What the e2e tests need from a cluster, whichever makes it: `KubeletCluster` (here, in
`make test`) or `KindCluster` (kind on a private dockerd, `make e2e-kind`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar


class ClusterNode(Protocol):
    """A node as the tests see it: its Node name and its `/var/lib/modelcache` on this host."""

    @property
    def name(self) -> str: ...

    @property
    def hostpath(self) -> Path: ...


NodeT = TypeVar("NodeT", bound=ClusterNode)


class E2ECluster(Protocol[NodeT]):
    """A running cluster of kubelet nodes, each with a cache directory of its own."""

    work_dir: Path
    kubernetes_version: str  # what every component reports

    @property
    def nodes(self) -> Sequence[NodeT]: ...

    @property
    def kubeconfig(self) -> Path: ...

    @property
    def address(self) -> str:
        """An address of this machine that pods reach (the tests' object store listens there)."""
        ...

    @property
    def helm_binary(self) -> Path: ...

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str: ...

    def stop_kubelet(self, node: NodeT) -> None: ...

    def start_kubelet(self, node: NodeT) -> None: ...

    def add_node(self, *, studio: bool = True) -> NodeT: ...
