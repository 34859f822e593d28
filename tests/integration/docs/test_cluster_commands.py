"""The docs' cluster snippets against a real API server with no kubelet, on any machine:
every command runs as written and the server takes it (the chart with the docs' values,
the Secrets, the ModelVersions through the CRDs' schema and CEL rules, the patch, the
`modelcache rollback`). Nothing runs pods here, so the test stands in for the operator
where a later command reads what the operator writes (the history a rollback needs).
That the rollouts then happen is tests/cluster/test_docs_snippets.py's part, on the e2e
cluster, with the same commands.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelcache.testing import KubeControlPlane, Toolchain
from modelcache.testing.images import PROJECT_IMAGES
from tests.integration.docs.snippets import REPO, Ran, base_env, block, commands, fill_in, run_shell

EXAMPLE_S3 = "http://minio.storage:9000"


def stand_ins() -> tuple[dict[str, tuple[str, ...]], str]:
    from tests.cluster.test_docs_snippets import DOCKER_STAND_IN, RUNS  # noqa: PLC0415

    cases = "\n".join(
        f'  "build -f {image.dockerfile} -t {image.ref} .") echo "{image.ref}: built" ;;'
        for image in PROJECT_IMAGES
    )
    return RUNS, DOCKER_STAND_IN.format(cases=cases)


class ApiShell:
    """A reader's shell whose kubectl and helm reach a bare API server."""

    def __init__(self, plane: KubeControlPlane, toolchain: Toolchain, home: Path) -> None:
        self.runs, docker = stand_ins()
        bin_dir = home / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "kubectl").symlink_to(toolchain.kubectl)
        (bin_dir / "helm").symlink_to(toolchain.helm)
        (bin_dir / "docker").write_text(docker)
        (bin_dir / "docker").chmod(0o755)
        self.env = base_env(home, KUBECONFIG=str(plane.kubeconfig))
        self.env["PATH"] = f"{bin_dir}:{self.env['PATH']}"

    def run(self, command: str, cwd: Path) -> Ran:
        return run_shell(command, cwd=cwd, env=self.env, timeout=300).check()

    def kubectl_json(self, *args: str) -> dict[str, object]:
        shown = self.run(" ".join(["kubectl", *args, "-o", "json"]), REPO).stdout
        loaded: dict[str, object] = json.loads(shown)
        return loaded

    def follow(
        self, name: str, text: str, cwd: Path, before: dict[int, Callable[[], None]]
    ) -> list[Ran]:
        found = commands(text)
        assert len(found) == len(self.runs[name]), f"{name}: commands are now {found}"
        ran = []
        for index, command in enumerate(found):
            assert command.startswith(self.runs[name][index]), command
            if index in before:
                before[index]()
            ran.append(self.run(command, cwd))
        return ran


@pytest.fixture
def api_shell(toolchain: Toolchain, tmp_path: Path) -> Iterator[ApiShell]:
    """An API server of its own: the chart installs cluster-wide objects and namespaces,
    which a bare server cannot delete (no namespace controller)."""
    with KubeControlPlane(toolchain=toolchain, work_dir=tmp_path / "kube") as plane:
        yield ApiShell(plane, toolchain, tmp_path / "home")


def credentials_role(shell: ApiShell) -> list[str]:
    """The Secrets the chart lets agents read in `studio`, as the server holds the Role."""
    role = shell.kubectl_json("-n", "studio", "get", "role", "mc-agent-credentials")
    rules = role["rules"]
    assert isinstance(rules, list)
    return [name for rule in rules for name in rule.get("resourceNames", [])]


def record_history(shell: ApiShell, name: str, versions: list[str]) -> None:
    """What the operator writes once each version has been live (here no operator runs)."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    history = [
        {"version": v, "activatedAt": (start + dt.timedelta(minutes=i)).isoformat()}
        for i, v in enumerate(versions)
    ]
    patch = json.dumps({"status": {"history": history}})
    shell.run(
        f"kubectl -n studio patch mv {name} --subresource=status --type=merge -p '{patch}'",
        REPO,
    )


def test_readme_cluster_snippets_are_taken_by_an_api_server(
    api_shell: ApiShell, tmp_path: Path
) -> None:
    install = block("cluster", "readme-install")
    api_shell.follow("readme-install", install.text, REPO, {})
    assert credentials_role(api_shell) == ["oss-credentials"]

    (tmp_path / "garment-lora.yaml").write_text(block("file", "garment-lora.yaml").text)
    quickstart = block("cluster", "readme-quickstart")
    api_shell.env |= {
        "OSS_ENDPOINT": "http://127.0.0.1:9",
        "OSS_ACCESS_KEY_ID": "...",
        "OSS_ACCESS_KEY_SECRET": "...",
    }
    ran = api_shell.follow(
        "readme-quickstart",
        quickstart.text,
        tmp_path,
        {4: lambda: record_history(api_shell, "garment-lora", ["v2.3.1", "v2.4.0"])},
    )
    assert "garment-lora" in ran[2].stdout
    assert "v2.4.0 -> v2.3.1" in ran[4].stdout
    spec = api_shell.kubectl_json("-n", "studio", "get", "mv", "garment-lora")["spec"]
    assert isinstance(spec, dict)
    assert spec["version"] == "v2.3.1"
    assert spec["rollout"]["maxUnavailable"] == "25%"
    secret = api_shell.kubectl_json("-n", "studio", "get", "secret", "oss-credentials")["data"]
    assert isinstance(secret, dict)
    assert set(secret) == {"OSS_ENDPOINT", "OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"}


def test_cluster_doc_snippets_are_taken_by_an_api_server(
    api_shell: ApiShell, tmp_path: Path
) -> None:
    api_shell.follow("cluster-images", block("cluster", "cluster-images").text, REPO, {})
    ran = api_shell.follow("cluster-install", block("cluster", "cluster-install").text, REPO, {})
    assert "mc-operator" in ran[2].stdout
    assert credentials_role(api_shell) == ["store"]

    snippet = block("cluster", "cluster-modelversion")
    text = fill_in(snippet.text, {EXAMPLE_S3: "http://127.0.0.1:9"}, snippet.where)
    ran = api_shell.follow("cluster-modelversion", text, tmp_path, {})
    assert ran[2].stdout.split()[:3] == ["NAME", "VERSION", "READY"]
    spec = api_shell.kubectl_json("-n", "studio", "get", "mv", "lora")["spec"]
    assert isinstance(spec, dict)
    assert spec["source"] == {"url": "s3://models/lora", "credentialsSecret": {"name": "store"}}
    assert spec["version"] == "v1"
