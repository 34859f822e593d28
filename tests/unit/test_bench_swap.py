"""bench/swap.py stays runnable: a tiny CPU run, and its modelcache figures hold the contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_swap_bench_runs_and_no_request_sees_two_versions(tmp_path: Path) -> None:
    out = tmp_path / "swap.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "swap.py"),
            "--device",
            "cpu",
            "--mib",
            "2",
            "--latency-swaps",
            "3",
            "--endurance-mib",
            "1",
            "--swaps",
            "12",
            "--dim",
            "256",
            "--rank",
            "16",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    figures = json.loads(out.read_text())
    ours = figures["endurance"]["modelcache"]
    assert ours["swaps"] == figures["endurance"]["baseline"]["swaps"] == 12
    assert ours["requests"] > 0
    assert (ours["failed"], ours["mixed_versions"], ours["storage_moved"]) == (0, 0, 0)
    assert set(figures["latency"]) == {"modelcache", "baseline"}
