"""The docs' cluster snippets, run as written on the e2e cluster: the README's install and
quick start, docs/cluster.md's images, install and ModelVersion.

Each snippet's commands run one after the other with bash, the way a reader types them,
from the repository root (the README's relative chart path) or a dir holding the files
the docs write (garment-lora.yaml). Between two commands the test waits where a reader
would (until the rollout the previous command started is done), then checks what the
docs say comes next: the pods Ready, `kubectl get mv` showing the version READY on every
node, the files on each node's own disk, `modelcache rollback` putting the old version
back. `docker build` is a stand-in that accepts exactly the images the e2e harness built
from those Dockerfiles under those tags and loaded into every node.

These tests install the chart themselves, as the docs do, so they must run before the
session's own install (conftest.ORDER: right after test_cleanup). Each flow removes all
it made (ModelVersions, their files on the nodes, the `studio` namespace, the release,
the kopf peering object, node labels) so the session's fixtures find the cluster as new.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelcache.api.k8s import GROUP, VERSION
from modelcache.testing.images import PROJECT_IMAGES
from modelcache.testing.objectstore import ACCESS_KEY, SECRET_KEY, ObjectStore
from tests.cluster.conftest import Cluster
from tests.cluster.test_deploy import eventually
from tests.integration.docs.snippets import (
    REPO,
    Ran,
    base_env,
    block,
    commands,
    fill_in,
    run_shell,
)

RUNS = {  # the snippets this module runs, and the commands each must hold, in order
    "readme-install": ("docker build", "docker build", "kubectl create namespace", "helm install"),
    "readme-quickstart": (
        "kubectl -n studio create secret",
        "kubectl apply -f garment-lora.yaml",
        "kubectl get mv",
        "kubectl patch mv garment-lora",
        "modelcache rollback garment-lora -n studio",
    ),
    "cluster-images": ("docker build", "docker build"),
    "cluster-install": (
        "kubectl create namespace",
        "helm install",
        "kubectl -n modelcache-system get",
    ),
    "cluster-modelversion": (
        "kubectl -n studio create secret",
        "kubectl apply -f -",
        "kubectl get mv",
    ),
}
RELEASE, SYSTEM, NAMESPACE = "mc", "modelcache-system", "studio"  # as the docs name them
# A guard against a hang, not a budget: the first test may also wait for the cluster to
# start (about 4 min), then installs, rolls out three times and uninstalls.
pytestmark = pytest.mark.timeout(1800)
GPU_LABEL = ("nvidia.com/gpu.product", "A100-SXM4-40GB")  # the README's nodeSelector
EXAMPLE_OSS = "https://oss-cn-hangzhou.aliyuncs.com"  # the README's endpoint
EXAMPLE_S3 = "http://minio.storage:9000"  # docs/cluster.md's endpoint


@dataclass
class Shell:
    """A reader's shell on this cluster: kubectl, helm and modelcache on PATH, KUBECONFIG set."""

    cluster: Cluster
    env: dict[str, str]

    def run(self, command: str, cwd: Path) -> Ran:
        return run_shell(command, cwd=cwd, env=self.env, timeout=600).check()

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.cluster.kubectl(*args, check=check)

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["helm", *args], env=self.env, capture_output=True, text=True, check=False
        )

    def exporting(self, **variables: str) -> Shell:
        """This shell after the reader exported `variables`."""
        return Shell(self.cluster, {**self.env, **variables})

    def follow(self, name: str, cwd: Path, after: dict[int, Callable[[Ran], None]]) -> None:
        """Run snippet `name` command by command; `after[i]` waits or checks after the i-th."""
        snippet = block("cluster", name)
        self.run_commands(name, snippet.text, cwd, after)

    def run_commands(
        self, name: str, text: str, cwd: Path, after: dict[int, Callable[[Ran], None]]
    ) -> None:
        found = commands(text)
        expected = RUNS[name]
        assert len(found) == len(expected), f"{name}: commands are now {found}"
        for index, (command, prefix) in enumerate(zip(found, expected, strict=True)):
            assert command.startswith(prefix), f"{name}: {command!r} is not `{prefix} ...`"
            ran = self.run(command, cwd)
            if index in after:
                after[index](ran)


def _kubectl_binary(cluster: Cluster) -> str:
    toolchain = getattr(cluster, "toolchain", None)  # both clusters: the pinned build
    found = getattr(toolchain, "kubectl", None) or shutil.which("kubectl")
    assert found, "no kubectl"
    return str(found)


DOCKER_STAND_IN = """#!/bin/sh
# The e2e harness built these images from these Dockerfiles, unmodified, and loaded them
# into every node: a `docker build` of one of them is done; anything else is not.
case "$*" in
{cases}
  *) echo "docker $*: not an image the e2e harness builds" >&2; exit 1 ;;
esac
"""


@pytest.fixture(scope="module")
def shell(e2e_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Shell:
    home = tmp_path_factory.mktemp("reader")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(_kubectl_binary(e2e_cluster))
    (bin_dir / "helm").symlink_to(e2e_cluster.helm_binary)
    cases = "\n".join(
        f'  "build -f {image.dockerfile} -t {image.ref} .") echo "{image.ref}: built" ;;'
        for image in PROJECT_IMAGES
    )
    docker = bin_dir / "docker"
    docker.write_text(DOCKER_STAND_IN.format(cases=cases))
    docker.chmod(0o755)
    env = base_env(
        home,
        KUBECONFIG=str(e2e_cluster.kubeconfig),
        HELM_CACHE_HOME=str(e2e_cluster.work_dir / "helm"),
    )
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return Shell(e2e_cluster, env)


@pytest.fixture(scope="module", autouse=True)
def nothing_installed_yet(shell: Shell) -> None:
    """The docs install the chart; the session's fixtures install it later, once more."""
    listed = shell.helm("status", RELEASE, "-n", SYSTEM)
    namespace = shell.kubectl("get", "namespace", NAMESPACE, "--ignore-not-found")
    if listed.returncode == 0 or namespace.strip():
        pytest.fail(
            "the docs' snippets install the chart and create the `studio` namespace as a "
            "reader does, so they must run before the session's install: list "
            "test_docs_snippets right after test_cleanup in tests/cluster/conftest.ORDER"
        )


# --- waiting where a reader waits -----------------------------------------------------------


def wait_for_install(shell: Shell) -> None:
    """`helm install` returns at once; the operator's 2 replicas and an agent on every node
    then come up (what `kubectl get deploy,ds` shows once they have)."""
    for kind in (f"deployment/{RELEASE}-operator", f"daemonset/{RELEASE}-agent"):
        shell.kubectl("-n", SYSTEM, "rollout", "status", kind, "--timeout=300s")


def mv_status(api: client.ApiClient, name: str) -> dict[str, Any]:
    body = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "modelversions", name
    )
    return dict(body.get("status") or {})


def wait_available(api: client.ApiClient, cluster: Cluster, name: str, version: str) -> None:
    want = f"{len(cluster.nodes)}/{len(cluster.nodes)}"

    def live() -> bool:
        status = mv_status(api, name)
        return (
            status.get("phase") == "Available"
            and status.get("currentVersion") == version
            and status.get("ready") == want
        )

    try:
        eventually(live, f"{name} {version} Available, READY {want}", timeout=300)
    except AssertionError:
        print(json.dumps(mv_status(api, name), indent=1))
        raise


def shows(ran: Ran, name: str, version: str, cluster: Cluster) -> None:
    """`kubectl get mv` as the docs print it: NAME VERSION READY PHASE AGE."""
    want = f"{len(cluster.nodes)}/{len(cluster.nodes)}"
    rows = [line.split() for line in ran.stdout.splitlines()]
    assert rows[0][:4] == ["NAME", "VERSION", "READY", "PHASE"], ran.stdout
    assert [name, version, want, "Available"] in [row[:4] for row in rows[1:]], ran.stdout


def on_every_node(cluster: Cluster, name: str, version: str) -> None:
    for node in cluster.nodes:
        current = node.hostpath / "models" / NAMESPACE / name / "current"
        assert current.resolve().name == version, f"{node.name}: {current}"


def publish(url: str, version: str, work: Path, shell: Shell) -> None:
    """A version published before the snippet (the README's publish step makes one more)."""
    model = work / f"{url.rsplit('/', 1)[-1]}-{version}"
    model.mkdir(parents=True)
    (model / "pytorch_lora_weights.safetensors").write_bytes(version.encode() * 50_000)
    (model / "adapter_config.json").write_text('{"r": 16}\n')
    shell.run(f"modelcache publish {model} {url} --version {version}", work)


# --- taking it all away again ---------------------------------------------------------------


@contextmanager
def installed_by_the_docs(shell: Shell, models: tuple[str, ...]) -> Iterator[None]:
    """Whatever the snippets did, leave the cluster as the session's fixtures expect it."""
    try:
        yield
    finally:
        _remove(shell, models)


def _remove(shell: Shell, models: tuple[str, ...]) -> None:
    """Every step runs whatever the one before did: a failed test must not leave its
    namespace terminating or its release installed for the next ones."""
    cluster = shell.cluster
    for name in models:
        where = ("-n", NAMESPACE, "--ignore-not-found")
        shell.kubectl("delete", "mv", name, *where, "--timeout=180s", check=False)
        # Still there: no operator took its finalizer off (the install failed). Take it off.
        unfinalize = '{"metadata":{"finalizers":null}}'
        shell.kubectl(
            "patch", "mv", name, "-n", NAMESPACE, "--type=merge", "-p", unfinalize, check=False
        )
    deadline = time.monotonic() + 120
    leftovers = [
        node.hostpath / "models" / NAMESPACE / name for node in cluster.nodes for name in models
    ]
    while any(p.exists() for p in leftovers) and time.monotonic() < deadline:
        time.sleep(1)  # the agents remove a deleted ModelVersion's files
    for path in leftovers:  # an agent that never got to it: the next install must not see them
        shutil.rmtree(path, ignore_errors=True)
    shell.kubectl(
        "delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=180s", check=False
    )
    shell.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout=5m")
    # What the operators made outside the chart: the next install's operators make their own.
    shell.kubectl("delete", "clusterkopfpeering", "modelcache", "--ignore-not-found", check=False)
    shell.kubectl("delete", "nodecaches", "--all", "--ignore-not-found", check=False)
    for node in cluster.nodes:
        shell.kubectl("label", "node", node.name, f"{GPU_LABEL[0]}-", check=False)


# --- the README -----------------------------------------------------------------------------


def test_readme_install_and_quick_start(
    shell: Shell,
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    cluster_store: ObjectStore,
    tmp_path: Path,
) -> None:
    reader = shell.exporting(  # what the README's publish step exported (with this store)
        OSS_ENDPOINT=cluster_store.endpoint,
        OSS_ACCESS_KEY_ID="...",  # as the README writes them: SeaweedFS takes any key pair
        OSS_ACCESS_KEY_SECRET="...",
    )
    with installed_by_the_docs(shell, ("garment-lora",)):
        shell.follow("readme-install", REPO, {3: lambda _: wait_for_install(shell)})

        # The quick start: publish v2.3.1 (the README's own step, with this store's
        # endpoint); v2.3.0 (the prefetched rollback target) and v2.4.0 were published
        # before. GPU nodes carry the label the README's nodeSelector asks for.
        cluster_store.create_bucket("studio-models")
        for version in ("v2.3.0", "v2.4.0"):
            publish("oss://studio-models/lora", version, tmp_path, reader)
        (tmp_path / "garment-lora").mkdir()
        (tmp_path / "garment-lora" / "pytorch_lora_weights.safetensors").write_bytes(b"\1" * 65536)
        step = block("local", "readme-publish")
        run_shell(
            fill_in(step.text, {EXAMPLE_OSS: cluster_store.endpoint}, step.where),
            cwd=tmp_path,
            env=shell.env,
        ).check()
        (tmp_path / "garment-lora.yaml").write_text(block("file", "garment-lora.yaml").text)
        for node in e2e_cluster.nodes:
            shell.kubectl("label", "node", node.name, "=".join(GPU_LABEL), "--overwrite")

        def first_rollout(_: Ran) -> None:
            wait_available(cluster_api, e2e_cluster, "garment-lora", "v2.3.1")

        def patched(_: Ran) -> None:
            wait_available(cluster_api, e2e_cluster, "garment-lora", "v2.4.0")
            on_every_node(e2e_cluster, "garment-lora", "v2.4.0")

        def rolled_back(ran: Ran) -> None:
            assert "v2.4.0 -> v2.3.1" in ran.stdout, ran.stdout
            wait_available(cluster_api, e2e_cluster, "garment-lora", "v2.3.1")
            on_every_node(e2e_cluster, "garment-lora", "v2.3.1")

        reader.follow(
            "readme-quickstart",
            tmp_path,
            {
                1: first_rollout,
                2: lambda ran: shows(ran, "garment-lora", "v2.3.1", e2e_cluster),
                3: patched,
                4: rolled_back,
            },
        )


# --- docs/cluster.md ------------------------------------------------------------------------


def test_cluster_doc_images_install_and_model_version(
    shell: Shell,
    e2e_cluster: Cluster,
    cluster_api: client.ApiClient,
    cluster_store: ObjectStore,
    tmp_path: Path,
) -> None:
    with installed_by_the_docs(shell, ("lora",)):
        shell.follow("cluster-images", REPO, {})

        def ready(ran: Ran) -> None:
            """As the doc's comment says: the operator 2/2, an agent Ready on every node."""
            rows = {row[0]: row for row in map(str.split, ran.stdout.splitlines()) if row}
            assert rows[f"deployment.apps/{RELEASE}-operator"][1] == "2/2", ran.stdout
            ready_agents = rows[f"daemonset.apps/{RELEASE}-agent"][3]  # DESIRED CURRENT READY
            assert ready_agents == str(len(e2e_cluster.nodes)), ran.stdout

        shell.follow("cluster-install", REPO, {1: lambda _: wait_for_install(shell), 2: ready})

        # A version published to s3://models/lora first; the Secret names this store.
        cluster_store.create_bucket("models")
        publisher = shell.exporting(
            AWS_ENDPOINT_URL=cluster_store.endpoint,
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION="us-east-1",
        )
        publish("s3://models/lora", "v1", tmp_path, publisher)
        snippet = block("cluster", "cluster-modelversion")
        text = fill_in(snippet.text, {EXAMPLE_S3: cluster_store.endpoint}, snippet.where)

        def available(_: Ran) -> None:
            wait_available(cluster_api, e2e_cluster, "lora", "v1")
            on_every_node(e2e_cluster, "lora", "v1")

        shell.run_commands(
            "cluster-modelversion",
            text,
            tmp_path,
            {1: available, 2: lambda ran: shows(ran, "lora", "v1", e2e_cluster)},
        )
