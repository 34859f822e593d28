"""Undo a kubelet cluster's changes to the machine when the process that owns it dies.

`KubeletCluster.start()` spawns `python -m modelcache.testing.reaper --owner PID` in
a session of its own. A clean `stop()` clears the ledger and ends the reaper; if the
owner is killed instead (kill -9 of pytest, a crashed `dev up` daemon), the reaper
notices and stops the containers, unmounts, and removes links, rules and cgroups.
`KindCluster` spawns one with `--kind`: it watches the kind ledger and undoes a kind
run (its dockerd, containers, bridge, mounts, sysctls) the same way.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from modelcache.testing import hostnet, kindhost
from modelcache.testing.process import pid_alive


def spawn(owner: int, work_dir: Path, log_path: Path, *, kind: bool = False) -> int:
    """Start a reaper for `owner`; returns its PID (recorded so a clean stop can end it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelcache.testing.reaper",
                "--owner",
                str(owner),
                "--work-dir",
                str(work_dir),
                *(["--kind"] if kind else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # must outlive the owner it watches
        )
    return proc.pid


def watch(owner: int, work_dir: Path, interval: float = 1.0) -> None:
    while pid_alive(owner):
        time.sleep(interval)
        if not hostnet.LEDGER.exists():
            return  # stopped cleanly: nothing left to undo
    if hostnet.LEDGER.exists():
        print(f"owner {owner} died with the cluster up: undoing its changes", flush=True)
        hostnet.undo_all([work_dir])
        print(f"left over after the undo: {hostnet.leftovers() or 'nothing'}", flush=True)


def watch_kind(owner: int, interval: float = 1.0) -> None:
    while pid_alive(owner):
        time.sleep(interval)
        if not kindhost.LEDGER.exists():
            return
    if kindhost.LEDGER.exists():
        data_root = kindhost.Ledger().read().get("data_root")
        print(f"owner {owner} died with a kind cluster up: undoing its changes", flush=True)
        kindhost.undo_all()
        left = kindhost.leftovers(Path(data_root) if data_root else None)
        print(f"left over after the undo: {left or 'nothing'}", flush=True)


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m modelcache.testing.reaper")
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--kind", action="store_true", help="watch a kind run's ledger")
    args = parser.parse_args()
    if args.kind:
        watch_kind(args.owner)
    else:
        watch(args.owner, args.work_dir)


if __name__ == "__main__":
    _main()
