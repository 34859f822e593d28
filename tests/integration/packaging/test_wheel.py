"""Acceptance: `pip install modelcache[agent]` is the product and nothing else.

The wheel is built from this checkout with its own build backend (hatchling) and
installed with its `[agent]` extra from PyPI into a fresh venv, nothing from the
checkout on the path. In there the standalone agent pulls a published version and
calls a reload URL, every third-party module the agent's code imports comes from a
dependency the wheel declares for it, and `modelcache dev` says it needs a checkout.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.integration.cli.support import make_model, same_tree

REPO = Path(__file__).resolve().parents[3]
# The packages the agent's process runs (the CLI's `agent` command aside): what they
# import must be in the wheel's core or [agent] requirements.
AGENT_PACKAGES = ("agent", "api", "fleet", "fs", "serving", "sources", "store")
# Imported directly but part of a declared library's public API, shipped as its own
# distribution: boto3's exceptions and Config live in botocore, pydantic's errors in
# pydantic-core. The declared library pins the companion it needs.
COMPANIONS = {"botocore": "boto3", "pydantic-core": "pydantic"}
INSTALL_TIMEOUT = 600  # a first install downloads ~40 packages from PyPI; a guard, not a bound
RUN_TIMEOUT = 300  # a guard against a hang: the agent's one pass takes seconds


@dataclass(frozen=True)
class Install:
    """A fresh venv holding the wheel and its [agent] extra, nothing from the checkout."""

    wheel: Path
    root: Path
    work: Path  # the cwd of everything run in it: not the checkout, so not on sys.path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self) -> dict[str, str]:
        """The caller's environment without what would put the checkout or another
        environment's packages on this venv's path (the tests run with PYTHONPATH set)."""
        hidden = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        return {**env, "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def run(self, *command: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=self.work,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def build_wheel(out: Path) -> Path:
    """`pip wheel .` as a packager runs it: hatchling in an isolated build environment."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"building the wheel failed:\n{done.stdout}\n{done.stderr}"
    (wheel,) = out.glob("modelcache-*.whl")
    return wheel


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(base / "dist")
    root = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    work = base / "work"
    work.mkdir()
    installed = Install(wheel=wheel, root=root, work=work)
    done = installed.run(
        str(root / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        f"{wheel}[agent]",
        timeout=INSTALL_TIMEOUT,
    )
    assert done.returncode == 0, f"pip install [agent] failed:\n{done.stdout}\n{done.stderr}"
    where = installed.run(
        str(root / "bin" / "python"), "-c", "import modelcache; print(modelcache.__file__)"
    )
    assert Path(where.stdout.strip()).is_relative_to(root), where.stdout + where.stderr
    return installed


class ReloadRecorder(ThreadingHTTPServer):
    """An inference pod's reload endpoint: records each call, answers ok with the version."""

    calls: list[dict[str, Any]]


class _ReloadHandler(BaseHTTPRequestHandler):
    server: ReloadRecorder

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append(body)
        answer = json.dumps({"ok": True, "live_version": body["version"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def reload_endpoint() -> Iterator[ReloadRecorder]:
    server = ReloadRecorder(("127.0.0.1", 0), _ReloadHandler)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_wheel_holds_the_product_and_no_test_harness(install: Install) -> None:
    names = zipfile.ZipFile(install.wheel).namelist()
    assert "modelcache/agent/__init__.py" in names
    assert "modelcache/cli/main.py" in names
    harness = [n for n in names if n.startswith(("modelcache/testing/", "tests/"))]
    assert harness == []
    missing = install.run(str(install.bin / "python"), "-c", "import modelcache.testing")
    assert "No module named 'modelcache.testing'" in missing.stderr


def test_the_agent_runs_from_a_clean_install(
    install: Install, tmp_path: Path, reload_endpoint: ReloadRecorder
) -> None:
    model = make_model(tmp_path / "model", seed=15, sizes={"lora/a.safetensors": 64 * 1024})
    l3 = f"file://{tmp_path / 'l3'}"
    # Published with the checkout's own command, as a person with a checkout does.
    subprocess.run(
        [sys.executable, "-m", "modelcache", "publish", str(model), l3, "--version", "v1"],
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    root = tmp_path / "cache"
    reload_url = f"http://127.0.0.1:{reload_endpoint.server_port}/reload"
    config = {
        "root": str(root),
        "node": "gpu-01",
        "metrics_port": None,
        "models": [{"name": "studio/tiny", "source": l3, "version": "v1", "reload": [reload_url]}],
    }
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))

    done = install.run(
        str(install.bin / "modelcache"), "agent", "--config", str(tmp_path / "node.yaml"), "--once"
    )

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    live = root / "models/studio/tiny/current"
    assert live.resolve().name == "v1"
    assert same_tree(live, model)
    assert reload_endpoint.calls == [{"model": "studio/tiny", "version": "v1"}]


def test_dev_in_an_installed_wheel_says_it_needs_a_checkout(install: Install) -> None:
    done = install.run(str(install.bin / "modelcache"), "dev", "status")
    assert done.returncode != 0
    assert "needs a source checkout" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_every_module_the_agent_imports_is_a_declared_dependency(install: Install) -> None:
    wheel = zipfile.ZipFile(install.wheel)
    imported = {
        top
        for name in wheel.namelist()
        if name.endswith(".py") and _run_by_the_agent(name)
        for top in third_party_imports(wheel.read(name).decode())
    }
    providers = distributions_providing(install, sorted(imported))
    declared = agent_requirements(wheel)
    undeclared = {
        module: dists
        for module, dists in providers.items()
        if not any(d in declared or COMPANIONS.get(d) in declared for d in dists)
    }
    assert undeclared == {}, (
        f"the agent imports modules no core or [agent] dependency declares: {undeclared}"
    )


def _run_by_the_agent(name: str) -> bool:
    """A file of AGENT_PACKAGES, or a top-level module (`modelcache/problems.py`)."""
    parts = name.split("/")
    return parts[0] == "modelcache" and (len(parts) == 2 or parts[1] in AGENT_PACKAGES)


def third_party_imports(source: str) -> set[str]:
    """Top-level names of absolute imports, typing-only blocks left out, stdlib and the
    package itself excluded."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return {name for name in found if name not in sys.stdlib_module_names} - {"modelcache"}


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def distributions_providing(install: Install, modules: list[str]) -> dict[str, list[str]]:
    """Each module's distributions as installed in the venv (none: not installed at all)."""
    script = (
        "import importlib.metadata as m, json, sys\n"
        "found = m.packages_distributions()\n"
        "print(json.dumps({n: found.get(n, []) for n in sys.argv[1:]}))\n"
    )
    done = install.run(str(install.bin / "python"), "-c", script, *modules)
    assert done.returncode == 0, done.stderr
    mapping: dict[str, list[str]] = json.loads(done.stdout)
    return {module: [canonicalize_name(d) for d in dists] for module, dists in mapping.items()}


def agent_requirements(wheel: zipfile.ZipFile) -> set[str]:
    """The distributions the wheel's METADATA requires for `pip install modelcache[agent]`."""
    (metadata,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    requirements = [
        Requirement(line.partition(":")[2].strip())
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    return {
        canonicalize_name(r.name)
        for r in requirements
        if r.marker is None or r.marker.evaluate({"extra": "agent"})
    }
