"""bench/fleet.py stays runnable: a tiny run on a fast line, and its byte figures hold the
fan-out's contract (issue 16) as read from the line's own counter, not from our logs.

No time is asserted: the bench reports seconds, this only checks it runs end to end and
cleans up what it made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelcache.testing.netns import namespaces

ROOT = Path(__file__).resolve().parents[3]
MIB = 1024 * 1024
# Manifests, index and HEADs: far below one 4 MiB piece.
ALLOWANCE = 512 * 1024

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="bench/fleet.py needs root (a namespace, a veth pair, tc)"
)


@needs_root
def test_fleet_bench_runs_and_each_byte_crosses_the_line_once(tmp_path: Path) -> None:
    out, png, work = tmp_path / "fleet.json", tmp_path / "fleet.png", tmp_path / "work"
    work.mkdir()
    before = set(namespaces())
    # 100 MiB: every file (70, 25 and 5 MiB) is larger than one piece, so each has digests.
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fleet.py"),
            *("--mib", "100", "--nodes", "2", "--big-nodes", "3"),
            *("--rate-mbit", "800", "--rtt-ms", "0"),
            *("--json", str(out), "--png", str(png), "--work-dir", str(work)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    figures = json.loads(out.read_text())
    size, phases = figures["size"], figures["phases"]
    assert size == 100 * MIB
    assert set(phases) == {"alone", "off", "on", "join", "big"}
    for key, nodes in (("alone", 1), ("off", 2), ("on", 2), ("join", 1), ("big", 3)):
        assert len(phases[key]["per_node"]) == nodes, phases[key]
    # Peers off: every node reads every byte; peers on: the site reads each byte once.
    assert 2 * size <= phases["off"]["l3_payload"] <= 2 * size + ALLOWANCE
    for key in ("on", "big"):
        assert size <= phases[key]["l3_payload"] <= size + ALLOWANCE, phases[key]
        assert phases[key]["bad_pieces"] == 0
    # The joining node reads no piece from L3 (its manifest only).
    assert phases["join"]["pieces_from_l3"] == 0
    assert phases["join"]["l3_payload"] <= ALLOWANCE
    assert phases["join"]["from_peers"] == size
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 2 + 3 + 3 nodes held the model at once at most: their roots are gone.
    assert list(work.iterdir()) == []
    assert set(namespaces()) <= before
