"""Session-wide guard: a test run never leaves a server it started running."""

from __future__ import annotations

import os

import pytest

from modelcache.testing.process import ManagedProcess


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = ManagedProcess.still_running()
    for proc in leaked:
        proc.stop()
    if leaked:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in leaked)
        print(f"\nERROR: tests left these processes running (now stopped): {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if os.geteuid() == 0:
        from modelcache.testing.cluster import undo_leftovers  # noqa: PLC0415

        left = undo_leftovers()
        if left:
            print("\nERROR: the test cluster left these on the machine (now undone):")
            print("\n".join(f"  {thing}" for thing in left))
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
