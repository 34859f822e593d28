"""bench/peer_serve.py stays runnable: a tiny run in which a loader takes a blob from a
real agent's peer server while the agent switches a model back and forth, every switch
reloaded with the version asked for. No time is asserted: the bench reports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_peer_serve_bench_serves_and_switches_meanwhile(tmp_path: Path) -> None:
    out, work = tmp_path / "serve.json", tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "peer_serve.py"),
            *("--mib", "16", "--flips", "2", "--rounds", "2", "--min-serve", "1"),
            *("--warmup", "0.5", "--work-dir", str(work), "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (len(result["idle"]), len(result["serving"])) == (4, 4)
    assert all(s["flip"] >= 0 and s["reload"] >= s["flip"] for s in result["idle"])
    assert result["served_bytes"] > 16 * 1024 * 1024  # the blob, at least once
    assert "serving cost" in done.stdout
    assert list(work.iterdir()) == []  # the store, the cache and the model removed
