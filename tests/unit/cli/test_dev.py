"""`modelcache dev` where the test harness is not installed, as in the project's images."""

from __future__ import annotations

import subprocess
import sys

# What an image's install looks like to Python: the package without modelcache.testing.
WITHOUT_HARNESS = """
import sys
sys.modules["modelcache.testing"] = None
sys.argv = ["modelcache", *sys.argv[1:]]
from modelcache.cli.main import main
main()
"""


def run_without_harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_HARNESS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dev_without_the_harness_says_it_needs_a_source_checkout() -> None:
    result = run_without_harness("dev", "status")
    assert result.returncode == 1
    assert "needs a source checkout" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_other_commands_run_without_the_harness() -> None:
    result = run_without_harness("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("modelcache ")
    result = run_without_harness("ls", "--help")
    assert result.returncode == 0, result.stderr
