"""`modelcache dev up/down` as a person runs them: services reachable, then all gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from modelcache.testing.devenv import pid_alive

MODELCACHE = [sys.executable, "-m", "modelcache.cli.main"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELCACHE, *args], capture_output=True, text=True, check=False, env=env, timeout=300
    )


def test_up_status_down(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "dev")
    started = run("dev", "up", "--state-dir", state_dir, "--json")
    try:
        assert started.returncode == 0, started.stderr
        state = json.loads(started.stdout)
        pids = [state["pid"], *state["children"].values()]
        assert set(state["children"]) == {"etcd", "kube-apiserver", "weed"}
        assert all(pid_alive(pid) for pid in pids)

        again = run("dev", "up", "--state-dir", state_dir, "--json")
        assert again.returncode == 0
        assert json.loads(again.stdout)["pid"] == state["pid"], "a second `up` reuses the first"

        env = {**os.environ, "KUBECONFIG": state["kubeconfig"]}
        kubectl = subprocess.run(
            [state["kubectl"], "get", "namespace", "default", "-o", "jsonpath={.status.phase}"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert kubectl.stdout == "Active", kubectl.stderr

        status = run("dev", "status", "--state-dir", state_dir)
        assert status.returncode == 0
        assert json.loads(status.stdout)["s3_endpoint"] == state["s3_endpoint"]
    finally:
        stopped = run("dev", "down", "--state-dir", state_dir)
    assert stopped.returncode == 0
    assert "stopped" in stopped.stdout
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if pid_alive(pid)], "dev down left processes running"
    assert run("dev", "status", "--state-dir", state_dir).returncode == 3
    assert "nothing was running" in run("dev", "down", "--state-dir", state_dir).stdout
