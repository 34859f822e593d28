"""Undo a kubelet cluster's changes to the machine when the process that owns it dies.

`KubeletCluster.start()` spawns `python -m modelcache.testing.reaper --owner PID` in
a session of its own. A clean `stop()` clears the ledger and ends the reaper; if the
owner is killed instead (kill -9 of pytest, a crashed `dev up` daemon), the reaper
notices and stops the containers, unmounts, and removes links, rules and cgroups.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from modelcache.testing import hostnet
from modelcache.testing.process import pid_alive


def spawn(owner: int, work_dir: Path, log_path: Path) -> int:
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


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m modelcache.testing.reaper")
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()
    watch(args.owner, args.work_dir)


if __name__ == "__main__":
    _main()
