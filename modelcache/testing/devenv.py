"""`modelcache dev up/down`: the test services in the background, for a person.

`up` builds the toolchain in the foreground (with progress), then starts a
detached daemon that owns etcd, kube-apiserver and SeaweedFS and records how to
reach them in `state.json`; `down` stops that daemon by PID, and the daemon stops
its children. The children die with the daemon even if it is SIGKILLed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcache.testing.cache import cache_dir
from modelcache.testing.kube import KubeControlPlane
from modelcache.testing.objectstore import ObjectStore
from modelcache.testing.ports import wait_until
from modelcache.testing.toolchain import ensure_toolchain

DEFAULT_BUCKET = "models"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class DevState:
    """What a person (or the demo) needs to reach the running services."""

    pid: int
    kubeconfig: str
    apiserver: str
    s3_endpoint: str
    bucket: str
    kubectl: str
    helm: str
    log: str
    children: dict[str, int]


def default_state_dir() -> Path:
    return cache_dir() / "dev"


def read_state(state_dir: Path) -> DevState | None:
    """The recorded state if its daemon is still alive, else None."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        state = DevState(**data)
    except (OSError, ValueError, TypeError):
        return None
    return state if pid_alive(state.pid) else None


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def up(state_dir: Path | None = None, *, timeout: float = 180.0) -> tuple[DevState, bool]:
    """Start the services unless already up; returns (state, started_now)."""
    directory = state_dir or default_state_dir()
    running = read_state(directory)
    if running is not None:
        return running, False
    ensure_toolchain()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE_FILE).unlink(missing_ok=True)
    log_path = directory / "devenv.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelcache.testing.devenv",
                "serve",
                "--state-dir",
                str(directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and the terminal
        )

    def daemon_died() -> str | None:
        if daemon.poll() is None:
            return None
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        return f"the dev daemon exited with code {daemon.returncode}:\n{tail}"

    wait_until(
        lambda: read_state(directory) is not None,
        timeout=timeout,
        what="modelcache dev environment",
        alive=daemon_died,
        interval=0.25,
    )
    state = read_state(directory)
    assert state is not None
    return state, True


def down(state_dir: Path | None = None, *, timeout: float = 30.0) -> bool:
    """Stop the daemon (and so its services); False when nothing was running."""
    directory = state_dir or default_state_dir()
    state = read_state(directory)
    if state is None:
        (directory / STATE_FILE).unlink(missing_ok=True)
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(state.pid):
        # The children carry PDEATHSIG, but make sure: kill the recorded PIDs too.
        for pid in [state.pid, *state.children.values()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return True


def serve(state_dir: Path) -> None:
    """The daemon: start everything, publish state.json, wait for SIGTERM/SIGINT, stop."""
    toolchain = ensure_toolchain()
    for sub in ("kube", "s3"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    kube = KubeControlPlane(toolchain=toolchain, work_dir=state_dir / "kube")
    store = ObjectStore(weed=toolchain.weed, work_dir=state_dir / "s3")
    try:
        kube.start()
        store.start()
        store.create_bucket(DEFAULT_BUCKET)
        children = {p.name: p.pid for p in kube.processes if p.pid is not None}
        if store.process is not None and store.process.pid is not None:
            children["weed"] = store.process.pid
        state = DevState(
            pid=os.getpid(),
            kubeconfig=str(kube.kubeconfig),
            apiserver=kube.url,
            s3_endpoint=store.endpoint,
            bucket=DEFAULT_BUCKET,
            kubectl=str(toolchain.kubectl),
            helm=str(toolchain.helm),
            log=str(state_dir / "devenv.log"),
            children=children,
        )
        tmp = state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.replace(tmp, state_dir / STATE_FILE)
        print(f"modelcache dev environment ready: {json.dumps(asdict(state))}", flush=True)
        received = signal.sigwait({signal.SIGTERM, signal.SIGINT})
        print(f"received signal {received}, stopping", flush=True)
    finally:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        store.stop()
        kube.stop()


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m modelcache.testing.devenv")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    serve(args.state_dir)


if __name__ == "__main__":
    _main()
