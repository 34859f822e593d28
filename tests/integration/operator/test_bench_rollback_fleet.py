"""bench/rollback_fleet.py stays runnable and measures what it says: a tiny run, checked
for what a rollback must do (one spec write per node, every node answering, Available
after the patch), never for how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
NODES = 4


def test_rollback_fleet_bench_runs_and_accounts_for_every_node(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "rollback_fleet.py"),
            *("--nodes", str(NODES), "--repeats", "2", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "command -> Available" in done.stdout
    (size,) = json.loads(out.read_text())
    assert size["nodes"] == NODES
    targets = [r["target"] for r in size["rollbacks"]]
    assert targets == ["v1", "v2"]  # each rollback goes back to the version live before
    for rollback in size["rollbacks"]:
        # A rollback flips every node in one step: one spec write each, every node answers.
        assert rollback["spec_writes"] == NODES
        assert len(rollback["answers"]) == len(rollback["specs"]) == NODES
        assert 0 < rollback["patch"] <= rollback["first_spec"] <= rollback["last_spec"]
        assert rollback["last_spec"] <= rollback["last_report"] <= rollback["available"]
        assert rollback["requests"]["PUT/nodecaches/"][0] >= NODES
