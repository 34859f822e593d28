"""Every YAML under examples/ is what the real API server accepts as written: each file
(and each Kustomize directory, rendered) goes through a server-side dry run of
`kubectl apply` with modelcache's CRDs and Argo CD's Application CRD (from the Go module
proxy) installed. The GitOps example's parts agree with each other and with the agent: the
Secret template holds the keys the agent reads, the chart's Argo CD values render a chart
the API server accepts, the Argo CD health script is the repository's."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.agent.config import load_config
from modelcache.agent.kubeagent import SECRET_KEYS
from modelcache.testing import KubeControlPlane, Toolchain
from tests.integration.deploy.chart import (
    Helm,
    by_kind,
    install_monitoring_crds,
    install_served_crds,
    module_dir,
    one,
)

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
GITOPS = EXAMPLES / "gitops"
# A published module version of Argo CD; its manifests/crds/ holds the Application CRD.
ARGO_CD = "github.com/argoproj/argo-cd/v3@v3.5.8"
HEALTH_LUA = REPO / "deploy" / "argocd" / "modelcache.io" / "ModelVersion" / "health.lua"
HEALTH_KEY = "resource.customizations.health.modelcache.io_ModelVersion"
# YAML under examples/ that is not a Kubernetes object, and what checks it instead.
NOT_API_OBJECTS = {
    "examples/standalone/node.yaml": "the standalone agent's config file, read by the agent",
}
MAX_EXAMPLE_BYTES = 1 << 20


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def documents(path: Path) -> list[dict[str, Any]]:
    assert path.stat().st_size <= MAX_EXAMPLE_BYTES, f"{relative(path)} is too large"
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def argocd_crds(kube_client: Any) -> None:
    crd = yaml.safe_load(
        (module_dir(ARGO_CD) / "manifests" / "crds" / "application-crd.yaml").read_text()
    )
    install_served_crds(kube_client, [crd])


@pytest.fixture(scope="module")
def monitoring_crds(kube_client: Any) -> None:
    install_monitoring_crds(kube_client)


def kubectl(
    toolchain: Toolchain, kube: KubeControlPlane, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolchain.kubectl), f"--kubeconfig={kube.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def ensure_namespaces(kube_client: Any, objects: list[dict[str, Any]]) -> None:
    """Create the namespaces the objects live in (a dry run creates none, and a namespaced
    object in a missing namespace is refused); the Namespace objects are still dry-run."""
    core = client.CoreV1Api(kube_client)
    for name in sorted(
        {o["metadata"]["namespace"] for o in objects if "namespace" in o["metadata"]}
    ):
        try:
            core.create_namespace({"metadata": {"name": name}})
        except ApiException as error:
            if error.status != 409:
                raise


@pytest.mark.parametrize("path", example_files(), ids=relative)
def test_every_example_yaml_is_accepted_by_the_api_server(
    path: Path,
    toolchain: Toolchain,
    kube: KubeControlPlane,
    kube_client: Any,
    crds: Any,
    argocd_crds: None,
    tmp_path: Path,
) -> None:
    name = relative(path)
    if name in NOT_API_OBJECTS:
        config = load_config(path)  # ConfigError names the file and the field
        assert config.models, f"{name}: no models"
        return
    if path.name in ("kustomization.yaml", "kustomization.yml"):
        rendered = kubectl(toolchain, kube, "kustomize", str(path.parent))
        assert rendered.returncode == 0, f"{name}: kubectl kustomize: {rendered.stderr}"
        objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
        source = ("-k", str(path.parent))
    else:
        objects = documents(path)
        source = ("-f", str(path))
    assert objects, f"{name}: no objects"
    for item in objects:
        assert {"apiVersion", "kind", "metadata"} <= item.keys(), f"{name}: not an API object"
    ensure_namespaces(kube_client, objects)

    applied = kubectl(
        toolchain,
        kube,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=examples-test",
        *source,
    )

    assert applied.returncode == 0, f"{name}: {applied.stderr}"
    lines = [line for line in applied.stdout.splitlines() if line.strip()]
    assert len(lines) == len(objects), f"{name}: {applied.stdout}"
    assert all(line.endswith("serverside-applied (server dry run)") for line in lines), lines


def test_the_non_object_yaml_files_are_the_ones_named() -> None:
    """A YAML under examples/ is skipped from the dry run only by name, and that name exists."""
    for name in NOT_API_OBJECTS:
        assert (REPO / name).is_file(), name


def test_the_credentials_templates_hold_exactly_the_keys_the_agent_reads() -> None:
    secrets = documents(GITOPS / "secrets" / "l3-credentials.yaml")
    families = {
        "OSS": {keys[0] for keys in SECRET_KEYS.values()},
        "AWS": {keys[1] for keys in SECRET_KEYS.values()},
    }
    assert len(secrets) == 2
    for secret in secrets:
        keys = set(secret["stringData"])
        family = next((f for f in families if all(k.startswith(f) for k in keys)), None)
        assert family is not None, f"{secret['metadata']['name']} mixes OSS and AWS keys: {keys}"
        optional = {SECRET_KEYS["session_token"][0 if family == "OSS" else 1]}
        assert keys == families[family] - optional, f"{secret['metadata']['name']}: {keys}"


def kustomize(toolchain: Toolchain, directory: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [str(toolchain.kubectl), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert rendered.returncode == 0, f"{relative(directory)}: {rendered.stderr}"
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def argocd_app(name: str) -> dict[str, Any]:
    return one(documents(GITOPS / "argocd" / name), "Application")


def test_the_overlays_models_name_a_secret_the_chart_lets_the_agents_read(
    toolchain: Toolchain,
) -> None:
    """The ModelVersions' credentials Secret is in the template, in their namespace, and
    listed in the chart Application's agent.credentialsSecrets (the agents may read only
    those), and the models Application deploys the overlay into that namespace."""
    models = by_kind(kustomize(toolchain, GITOPS / "overlays" / "office"), "ModelVersion")
    assert {m["metadata"]["name"] for m in models} == {"sdxl-base", "garment-lora"}
    templates = {
        (s["metadata"]["namespace"], s["metadata"]["name"])
        for s in documents(GITOPS / "secrets" / "l3-credentials.yaml")
    }
    values = argocd_app("modelcache-chart.yaml")["spec"]["source"]["helm"]["valuesObject"]
    readable = values["agent"]["credentialsSecrets"]
    for model in models:
        namespace = model["metadata"]["namespace"]
        secret = model["spec"]["source"]["credentialsSecret"]["name"]
        assert (namespace, secret) in templates, model["metadata"]
        assert secret in readable.get(namespace, []), (namespace, secret, readable)

    app = argocd_app("studio-models.yaml")["spec"]
    assert (REPO / app["source"]["path"] / "kustomization.yaml").is_file()
    assert app["destination"]["namespace"] == models[0]["metadata"]["namespace"]


def test_the_chart_application_renders_a_chart_the_api_server_accepts(
    toolchain: Toolchain,
    kube: KubeControlPlane,
    kube_client: Any,
    crds: Any,
    monitoring_crds: None,
    tmp_path: Path,
) -> None:
    """The Argo CD Application's values pass the chart's schema and render objects the API
    server accepts; the agents mount the peer token Secret of the template (none rendered:
    Argo CD renders without a cluster and would make a new token at every sync)."""
    app = argocd_app("modelcache-chart.yaml")["spec"]
    assert (REPO / app["source"]["path"] / "Chart.yaml").is_file()
    helm_source = app["source"]["helm"]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(helm_source["valuesObject"]))
    namespace = app["destination"]["namespace"]
    helm = Helm(toolchain, kube)

    objects = helm.template(helm_source["releaseName"], namespace, "-f", str(values))

    token = one(documents(GITOPS / "secrets" / "peer-token.yaml"), "Secret")
    assert token["metadata"]["namespace"] == namespace
    assert not [s for s in by_kind(objects, "Secret") if "peer" in s["metadata"]["name"]]
    volumes = one(objects, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    mounted = next(v for v in volumes if v["name"] == "peer-token")["secret"]["secretName"]
    assert mounted == token["metadata"]["name"]
    kinds = {o["kind"] for o in objects}
    assert {"PodMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"} <= kinds
    ensure_namespaces(kube_client, [{"metadata": {"namespace": namespace}}])
    shown = helm.dry_run(namespace, objects, tmp_path)
    assert shown.count("serverside-applied (server dry run)") == len(objects), shown


def test_the_argocd_cm_example_holds_the_repositorys_health_check() -> None:
    config_map = one(documents(GITOPS / "argocd" / "argocd-cm-health.yaml"), "ConfigMap")
    assert config_map["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    }
    assert config_map["data"] == {HEALTH_KEY: HEALTH_LUA.read_text()}
