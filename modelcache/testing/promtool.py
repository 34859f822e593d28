"""Build (once) and locate promtool, which checks and unit-tests the chart's alert rules.

promtool is built with `go install` from the Go module proxy at a pinned Prometheus
release, like helm, and cached under `<cache>/bin/` with the release in its name: a new
pin rebuilds, an unchanged pin costs nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

from modelcache.testing.toolchain import (
    Report,
    _ensure_built,
    _go_env,
    _install,
    _pinned,
    _print_report,
    _run_go,
)

# Prometheus publishes its Go module as v0.<major><minor:02>.<patch>: v0.316.0 is 3.16.0.
PROMETHEUS_MODULE_VERSION = "v0.316.0"
_MODULE_VERSION = re.compile(r"v0\.(?P<major>[1-9])(?P<minor>\d{2})\.(?P<patch>0|[1-9]\d*)")


def prometheus_release(module_version: str) -> str:
    """`v0.316.0` -> `3.16.0`: the Prometheus release a module version stands for."""
    match = _MODULE_VERSION.fullmatch(module_version)
    if match is None:
        raise ValueError(
            f"prometheus module version {module_version!r} is not like v0.316.0 (release 3.16.0)"
        )
    return f"{match['major']}.{int(match['minor'])}.{int(match['patch'])}"


def _build_promtool(work: Path, log_path: Path, report: Report) -> None:
    release = prometheus_release(PROMETHEUS_MODULE_VERSION)
    env = _go_env(work)
    work.mkdir(parents=True, exist_ok=True)
    report(f"compiling promtool {release} (a few minutes the first time)")
    env["GOBIN"] = str(work / "out")
    # Stamped, so `promtool --version` reports the release rather than an empty version.
    ldflags = f"-s -w -X github.com/prometheus/common/version.Version={release}"
    _run_go(
        [
            "install",
            "-trimpath",
            # Rules and their tests need no service discovery: leaving out the cloud SDKs
            # roughly halves what is downloaded and compiled.
            "-tags=remove_all_sd",
            f"-ldflags={ldflags}",
            f"github.com/prometheus/prometheus/cmd/promtool@{PROMETHEUS_MODULE_VERSION}",
        ],
        cwd=work,
        log_path=log_path,
        env=env,
    )
    _install(work / "out" / "promtool", promtool_path(), "promtool")


def promtool_path() -> Path:
    """Where the pinned promtool lives once built."""
    return _pinned("promtool", f"v{prometheus_release(PROMETHEUS_MODULE_VERSION)}")


def ensure_promtool(report: Report | None = None) -> Path:
    """Build promtool at the pinned release if it is missing, under the toolchain's lock."""
    path = promtool_path()
    source = f"prometheus-{PROMETHEUS_MODULE_VERSION}"
    _ensure_built([(path, source, _build_promtool)], report or _print_report)
    return path


if __name__ == "__main__":
    print(ensure_promtool())
