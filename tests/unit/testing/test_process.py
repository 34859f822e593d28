"""ManagedProcess stops what it starts, by PID, even when the child ignores SIGTERM or we die."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelcache.testing.devenv import pid_alive
from modelcache.testing.ports import wait_until
from modelcache.testing.process import ManagedProcess

IGNORES_SIGTERM = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "stubborn",
        [sys.executable, "-c", IGNORES_SIGTERM],
        log_path=tmp_path / "stubborn.log",
        stop_grace=0.5,
    ).start()
    wait_until(lambda: "ready" in proc.log_tail(), timeout=30, what="child start")
    assert proc.stop() == -signal.SIGKILL
    assert proc.pid is not None
    assert not pid_alive(proc.pid)
    assert proc not in ManagedProcess.still_running()


def test_stop_uses_sigterm_first(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", ["sleep", "600"], log_path=tmp_path / "s.log").start()
    assert proc in ManagedProcess.still_running()
    assert proc.stop() == -signal.SIGTERM


def test_exit_reason_carries_the_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "import sys; print('bad flag --frobnicate'); sys.exit(3)"],
        log_path=tmp_path / "crash.log",
    ).start()
    with pytest.raises(
        RuntimeError, match=r"crasher exited with code 3(.|\n)*bad flag --frobnicate"
    ):
        wait_until(lambda: False, timeout=30, what="crasher", alive=proc.exit_reason)
    proc.stop()


def test_children_die_when_their_owner_is_killed(tmp_path: Path) -> None:
    """If the test runner is SIGKILLed, the servers it started do not outlive it."""
    owner_code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from modelcache.testing.process import ManagedProcess
        log = Path({str(tmp_path / "o.log")!r})
        p = ManagedProcess("orphan", ["sleep", "600"], log_path=log).start()
        print(p.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    child_pid = int(owner.stdout.readline())
    assert pid_alive(child_pid)
    owner.kill()
    owner.wait()
    wait_until(lambda: not pid_alive(child_pid), timeout=10, what="orphan to be killed")
    owner.stdout.close()


def test_wait_until_times_out_naming_what(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="the thing: not ready"):
        wait_until(lambda: False, timeout=0.2, what="the thing")
    assert time.monotonic() - started >= 0.2
