"""The engine's record of where a model comes from, on a real store with file:// sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import EventLog
from modelcache.sources import SourceError, open_source, publish
from modelcache.store import ModelRef, Store

MODEL = ModelRef("studio", "lora")


def test_a_pull_that_fails_changes_no_recorded_source(tmp_path: Path) -> None:
    """A mistyped URL for a cached model fails and leaves the recorded source alone; a URL
    that really holds the same version replaces it."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"weights")
    for where in ("l3", "mirror"):
        publish(open_source(f"file://{tmp_path / where}"), tmp_path / "model", "v1")
    engine = CacheEngine(Store(tmp_path / "cache"), EventLog())
    good = f"file://{tmp_path / 'l3'}"
    engine.pull(MODEL, good, "v1")
    assert engine.source_of(MODEL) == good

    for wrong in (f"file://{tmp_path / 'l3-typo'}", f"file://{tmp_path / 'model'}"):
        with pytest.raises(SourceError):
            engine.pull(MODEL, wrong, "v1")
        assert engine.source_of(MODEL) == good
    with pytest.raises(SourceError):
        engine.pull(MODEL, f"file://{tmp_path / 'l3-typo'}", "v2")
    assert engine.source_of(MODEL) == good

    mirror = f"file://{tmp_path / 'mirror'}"
    assert engine.pull(MODEL, mirror, "v1").already_installed
    assert engine.source_of(MODEL) == mirror


def test_verify_reports_every_corrupt_file_when_the_source_is_gone(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (model_dir / name).write_bytes(name.encode() * 1000)
    l3 = tmp_path / "l3"
    publish(open_source(f"file://{l3}"), model_dir, "v1")
    engine = CacheEngine(Store(tmp_path / "cache"), EventLog())
    engine.pull(MODEL, f"file://{l3}", "v1")
    held = engine.store.version_path(MODEL, "v1")
    for name in ("a.bin", "c.bin"):
        with (held / name).open("r+b") as handle:
            handle.write(b"XX")
    (l3 / "v1").rename(tmp_path / "gone")  # the source unreachable for repairs

    report = engine.verify([MODEL])
    assert len(report.corrupt) == 2, "both corrupt files found, not only the first"
    assert sorted(report.unrepaired) == sorted(report.corrupt)
    assert report.repaired == []


def test_a_bad_manifest_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "l3" / "v1").mkdir(parents=True)
    (tmp_path / "l3" / "v1" / "manifest.json").write_text('{"version": "v1", "files": [{}]}')
    engine = CacheEngine(Store(tmp_path / "cache"), EventLog())
    with pytest.raises(SourceError) as refused:
        engine.pull(MODEL, f"file://{tmp_path / 'l3'}", "v1")
    assert "invalid manifest" in str(refused.value)
    assert "\n" not in str(refused.value)
