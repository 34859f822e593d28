"""A child process we own: started with its output in a log file, stopped by its PID.

Children get PR_SET_PDEATHSIG, so if the test runner or `modelcache dev` daemon
that started them dies hard, the kernel kills them too: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the child before exec: ask the kernel for SIGKILL when our parent exits."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ManagedProcess:
    """One long-running server binary, e.g. etcd, kube-apiserver or weed."""

    _instances: ClassVar[weakref.WeakSet[ManagedProcess]] = weakref.WeakSet()

    @classmethod
    def still_running(cls) -> list[ManagedProcess]:
        """Every process started in this interpreter and not yet stopped (a leak check)."""
        return [p for p in list(cls._instances) if p.exit_reason() is None]

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_grace: float = 10.0,
        tie_to_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_grace = stop_grace
        self.tie_to_parent = tie_to_parent
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> ManagedProcess:
        if self._popen is not None:
            raise RuntimeError(f"{self.name} is already started (pid {self._popen.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        env = {**os.environ, **self.env} if self.env is not None else None
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            # Own session: a Ctrl-C in the terminal reaches only us; we stop the child.
            start_new_session=True,
            preexec_fn=_die_with_parent if self.tie_to_parent else None,  # noqa: PLW1509
        )
        ManagedProcess._instances.add(self)
        log.info("started %s pid=%d log=%s", self.name, self._popen.pid, self.log_path)
        return self

    def exit_reason(self) -> str | None:
        """None while running; else how it ended and the tail of its log."""
        if self._popen is None:
            return "not started"
        code = self._popen.poll()
        if code is None:
            return None
        return f"{self.name} exited with code {code}; last log lines:\n{self.log_tail()}"

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the grace period; returns the exit code."""
        proc = self._popen
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_grace)
                except subprocess.TimeoutExpired:
                    log.warning("%s ignored SIGTERM for %.0fs, killing", self.name, self.stop_grace)
                    proc.kill()
                    proc.wait(timeout=30)
            log.info("stopped %s pid=%d code=%s", self.name, proc.pid, proc.returncode)
            return proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_all(processes: Sequence[ManagedProcess]) -> None:
    """Stop in reverse start order; one failing stop does not leave the others running."""
    for proc in reversed(processes):
        with contextlib.suppress(Exception):
            proc.stop()


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
