"""What GitOps tools make of a ModelVersion: kstatus (Flux, kpt) and Argo CD's Lua health.

Two small Go programs (assets/kstatus, assets/luahealth) are built once from the Go
module proxy at pinned versions, like the other test binaries, so the tests ask the
real libraries rather than a re-implementation of their rules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcache.testing import gomod
from modelcache.testing.toolchain import (
    Report,
    ToolchainError,
    _ensure_built,
    _go_env,
    _install,
    _pinned,
    _print_report,
    _run_go,
)

CLI_UTILS_VERSION = "v0.37.2"  # sigs.k8s.io/cli-utils: pkg/kstatus/status
GOPHER_LUA_VERSION = "v1.1.1"  # github.com/yuin/gopher-lua, as Argo CD pins it
SIGS_YAML_VERSION = "v1.6.0"  # sigs.k8s.io/yaml: the luahealth program reads YAML testdata
ASSETS = Path(__file__).parent / "assets"
RUN_TIMEOUT_SECONDS = 60  # one evaluation takes milliseconds; guards a hung program only

KSTATUS_BUILD = f"kstatus-{CLI_UTILS_VERSION}"
LUAHEALTH_BUILD = f"luahealth-{GOPHER_LUA_VERSION}"


@dataclass(frozen=True)
class Health:
    """A status as a GitOps tool reports it: kstatus' Current/InProgress/Failed or Argo CD's
    Healthy/Progressing/Degraded, with its message."""

    status: str
    message: str


def _build_program(
    name: str, requires: list[str], work: Path, log_path: Path, report: Report
) -> None:
    """Build assets/<name>/main.go in a scratch module requiring the pinned `requires`."""
    env = _go_env(work)
    work.mkdir(parents=True, exist_ok=True)
    report(f"compiling {name} ({', '.join(requires)})")
    (work / "go.mod").write_text(gomod.plain_scratch_go_mod(name, "1.24"))
    (work / "go.sum").unlink(missing_ok=True)
    shutil.copyfile(ASSETS / name / "main.go", work / "main.go")
    _run_go(["get", *requires], cwd=work, log_path=log_path, env=env)
    _run_go(["mod", "tidy"], cwd=work, log_path=log_path, env=env)
    out = work / "out" / name
    _run_go(
        ["build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "."],
        cwd=work,
        log_path=log_path,
        env=env,
    )
    version = requires[0].rsplit("@", 1)[1]
    _install(out, _pinned(name, version), name)


def _build_kstatus(work: Path, log_path: Path, report: Report) -> None:
    _build_program(
        "kstatus",
        [f"sigs.k8s.io/cli-utils/pkg/kstatus/status@{CLI_UTILS_VERSION}"],
        work,
        log_path,
        report,
    )


def _build_luahealth(work: Path, log_path: Path, report: Report) -> None:
    _build_program(
        "luahealth",
        [
            f"github.com/yuin/gopher-lua@{GOPHER_LUA_VERSION}",
            f"sigs.k8s.io/yaml@{SIGS_YAML_VERSION}",
        ],
        work,
        log_path,
        report,
    )


def ensure_kstatus(report: Report | None = None) -> Path:
    """The kstatus program, built once per pin."""
    path = _pinned("kstatus", CLI_UTILS_VERSION)
    _ensure_built([(path, KSTATUS_BUILD, _build_kstatus)], report or _print_report)
    return path


def ensure_luahealth(report: Report | None = None) -> Path:
    """The Argo CD-style Lua health runner, built once per pin."""
    path = _pinned("luahealth", GOPHER_LUA_VERSION)
    _ensure_built([(path, LUAHEALTH_BUILD, _build_luahealth)], report or _print_report)
    return path


def _run(args: list[str]) -> Health:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    if result.returncode != 0:
        raise ToolchainError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-500:]}")
    answer = json.loads(result.stdout)
    return Health(status=str(answer["status"]), message=str(answer["message"]))


def kstatus(obj: dict[str, Any]) -> Health:
    """What kstatus' status.Compute says of `obj` (a whole object, as read from the API)."""
    program = ensure_kstatus()
    with tempfile.TemporaryDirectory(prefix="kstatus-") as scratch:
        path = Path(scratch) / "object.json"
        path.write_text(json.dumps(obj))
        return _run([str(program), str(path)])


def argocd_health(script: Path, obj_path: Path) -> Health:
    """What the Argo CD health check `script` returns for the object in `obj_path`."""
    return _run([str(ensure_luahealth()), str(script), str(obj_path)])


def argocd_health_of(script: Path, obj: dict[str, Any]) -> Health:
    """`argocd_health` of an object in memory."""
    with tempfile.TemporaryDirectory(prefix="luahealth-") as scratch:
        path = Path(scratch) / "object.json"
        path.write_text(json.dumps(obj))
        return argocd_health(script, path)
