"""Acceptance: kill -9 mid-pull never exposes a partial version; a full disk loses nothing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import EventLog
from modelcache.sources import open_source, publish
from modelcache.store import DiskFull, ModelRef, Store
from tests.integration.cli.support import BUCKET, Cli, make_model, same_tree

SMALL = {"lora/20.safetensors": 256 * 1024, "vae/config.json": 700}
KILL_POINTS = 12


def resume_progress(root: Path) -> int:
    """Bytes the (single) partial download's durable record claims: whole parts (the last
    counted whole too) and the first bytes of the parts in flight."""
    claimed = 0
    for record in (root / "tmp").glob("*.resume.json"):
        try:
            raw = json.loads(record.read_text())
            held = len(raw["done"]) * raw["part_size"] + sum(raw["partial"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        claimed = max(claimed, held)
    return claimed


def assert_live_untouched(cli: Cli, v1: Path) -> None:
    assert cli.live().resolve().name == "v1"
    assert same_tree(v1, cli.live())
    versions = cli.root / "models/default/lora/versions"
    assert sorted(p.name for p in versions.iterdir() if not p.name.startswith(".")) == ["v1"]


def test_kill_9_at_many_points_then_resume_is_byte_identical(
    cli: Cli, prefix: str, tmp_path: Path
) -> None:
    url = f"oss://{BUCKET}/{prefix}"
    v1 = make_model(tmp_path / "v1", seed=1, sizes=SMALL)
    v2 = make_model(tmp_path / "v2", seed=2, sizes={"unet/48.safetensors": 24 * 1024 * 1024})
    cli.run("publish", str(v1), url, "--version", "v1")
    cli.run("publish", str(v2), url, "--version", "v2")
    cli.run("use", "lora", "v1", "--source", url)

    size = 24 * 1024 * 1024  # published with pieces (schema 2): fetched in 4 MiB pieces
    pull = ("pull", url, "--name", "lora", "--version", "v2", "--part-size", "256K")
    throttled = (*pull, "--concurrency", "4", "--max-rate", "6M")
    kills = 0
    for point in range(1, KILL_POINTS + 1):
        target = point * size // (KILL_POINTS + 2)
        process = cli.popen(*throttled)
        deadline = time.monotonic() + 60
        while resume_progress(cli.root) < target and process.poll() is None:
            assert time.monotonic() < deadline, "pull made no progress"
            time.sleep(0.02)
        if process.poll() is not None:
            break  # finished before this point: the remaining points cannot be hit
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        assert_live_untouched(cli, v1)
    assert kills >= 10, f"only {kills} kills landed mid-download"

    cli.run(*pull)
    (end,) = [e for e in cli.events("L3_PULL_END") if e["version"] == "v2"]
    assert 0 < end["bytes_downloaded"] < 24 * 1024 * 1024, "resumed, not restarted"
    cli.run("use", "lora", "v2")
    assert same_tree(v2, cli.live())
    assert not list((cli.root / "tmp").glob("*.resume.json"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """An 8 MiB tmpfs: a filesystem that really cannot hold the next version."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_version_that_does_not_fit_is_refused_and_live_survives(
    cli: Cli, prefix: str, tmp_path: Path, small_disk: Path
) -> None:
    cli.root = small_disk / "cache"
    cli.env["MODELCACHE_ROOT"] = str(cli.root)
    url = f"oss://{BUCKET}/{prefix}"
    v1 = make_model(tmp_path / "v1", seed=1, sizes=SMALL)
    v2 = make_model(tmp_path / "v2", seed=2, sizes={"unet/48.safetensors": 12 * 1024 * 1024})
    cli.run("publish", str(v1), url, "--version", "v1")
    cli.run("publish", str(v2), url, "--version", "v2")
    cli.run("use", "lora", "v1", "--source", url)

    refused = cli.run("use", "lora", "v2", check=False)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert "space" in refused.stderr.lower() or "disk" in refused.stderr.lower()
    assert str(cli.root) in refused.stderr
    assert_live_untouched(cli, v1)


def test_configured_high_watermark_refuses_a_pull(cli: Cli, prefix: str, tmp_path: Path) -> None:
    url = f"oss://{BUCKET}/{prefix}"
    v1 = make_model(tmp_path / "v1", seed=1, sizes=SMALL)
    cli.run("publish", str(v1), url, "--version", "v1")
    cli.run("use", "lora", "v1", "--source", url)
    v2 = make_model(tmp_path / "v2", seed=3, sizes=SMALL)
    cli.run("publish", str(v2), url, "--version", "v2")

    refused = cli.run("use", "lora", "v2", "--high-watermark", "0.01", check=False)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert "watermark" in refused.stderr.lower()
    assert_live_untouched(cli, v1)
    # Refused before a byte moved, and still an event for whoever reads the log.
    (error,) = [e for e in cli.events("ERROR") if e.get("version") == "v2"]
    assert error["operation"] == "pull"
    assert "watermark" in error["error"]
    assert not [e for e in cli.events("L3_PULL_START") if e["version"] == "v2"]


class FillTheDisk:
    """Someone else writes to the node's disk after the pull's space check passed."""

    def __init__(self, disk: Path) -> None:
        self.filler = disk / "someone-else"

    def start(self, model: str, version: str, total_bytes: int, files: int) -> None:
        free = shutil.disk_usage(self.filler.parent).free
        self.filler.write_bytes(b"\0" * max(free - 1024 * 1024, 0))

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


def test_a_disk_filling_up_mid_pull_gives_the_space_back(tmp_path: Path, small_disk: Path) -> None:
    model = make_model(tmp_path / "v1", seed=4, sizes={"unet/w.safetensors": 3 * 1024 * 1024})
    publish(open_source(f"file://{tmp_path / 'l3'}"), model, "v1")
    store = Store(small_disk / "cache", high_watermark=1.0)
    engine = CacheEngine(store, EventLog(small_disk / "cache" / "events.jsonl"))
    ref, url = ModelRef("default", "lora"), f"file://{tmp_path / 'l3'}"
    filling = FillTheDisk(small_disk)

    with pytest.raises(DiskFull) as full:
        engine.pull(ref, url, "v1", progress=filling)
    message = str(full.value)
    assert "\n" not in message
    assert str(store.root) in message
    assert "full" in message
    leftovers = [p.name for p in (store.root / "tmp").iterdir() if p.is_file()]
    assert leftovers == [], "the preallocated partial and its record are gone"
    assert not store.has_version(ref, "v1")

    filling.filler.unlink()  # the other writer is done: the same pull now works
    assert engine.pull(ref, url, "v1").files_downloaded == 1
    assert store.has_version(ref, "v1")
